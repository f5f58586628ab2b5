"""The endpoints the kube-proxy of a client's node may pick (kube-proxy's CategorizeEndpoints)."""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from app.domain import Endpoint, EndpointSlice, Service

TOPOLOGY_MODE_ANNOTATION = "service.kubernetes.io/topology-mode"
# The annotation's name before v1.27; the controller still reads it when the new one is absent.
TOPOLOGY_HINTS_ANNOTATION = "service.kubernetes.io/topology-aware-hints"
SAME_ZONE_DISTRIBUTIONS = frozenset({"PreferClose", "PreferSameZone"})
SAME_NODE_DISTRIBUTION = "PreferSameNode"


class Policy(enum.StrEnum):
    CLUSTER = "Cluster"
    LOCAL = "Local"


class TopologyMode(enum.StrEnum):
    """The hint set kube-proxy applies on one node (none: every usable endpoint)."""

    NONE = ""
    SAME_NODE = "PreferSameNode"
    SAME_ZONE = "PreferSameZone"


class Fate(enum.StrEnum):
    ROUTED = "routed"  # to one of ``Expectation.endpoints``
    DROPPED = "dropped"  # Local policy, endpoints elsewhere only: packets vanish, the client times out
    REJECTED = "rejected"  # no usable endpoint anywhere: the connection is refused at once
    UNKNOWN = "unknown"  # the answer depends on the client's node or zone, which is not known


@dataclass(frozen=True, slots=True)
class Candidate:
    """One endpoint address of the Service (deduplicated across its EndpointSlices)."""

    address: str
    pod: str | None  # the targetRef's name when it is a Pod of the Service's own namespace
    node: str | None
    zone: str | None
    ready: bool
    serving: bool
    terminating: bool
    hints_zones: tuple[str, ...] = ()
    hints_nodes: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.pod or self.address

    @property
    def serving_terminating(self) -> bool:
        return self.serving and self.terminating


@dataclass(frozen=True, slots=True)
class Client:
    """Where requests come from: the node (and its zone) whose kube-proxy rules they meet."""

    node: str | None = None  # None: not known
    zone: str | None = None  # None: not known; "": the node has no topology.kubernetes.io/zone label
    ip: str | None = None


@dataclass(frozen=True, slots=True)
class Expectation:
    fate: Fate
    endpoints: tuple[Candidate, ...]  # those the client's kube-proxy may pick (empty unless routed)
    policy: Policy
    mode: TopologyMode
    terminating_fallback: bool  # no ready endpoint was usable: serving-terminating ones are used
    sticky_s: int | None  # ClientIP: one endpoint per client address for this long after its last connection
    reasons: tuple[str, ...]
    node: str | None = None  # the client's node the expectation is for

    @property
    def pods(self) -> frozenset[str]:
        return frozenset(c.name for c in self.endpoints)


def candidates(
    service: Service, slices: Iterable[EndpointSlice], port_name: str | None = None
) -> tuple[Candidate, ...]:
    """The Service's endpoints for one port and the ClusterIP's address family, as kube-proxy merges them.

    An endpoint counts for a port only if its slice lists a port of that name; an address in several slices
    is one endpoint (the first slice wins, as it would be de-duplicated by kube-proxy).
    """
    family = _family(service.cluster_ip)
    seen: dict[str, Candidate] = {}
    for es in sorted(slices, key=lambda s: s.key.name):
        if family and es.address_type != family:
            continue
        if port_name is not None and not any((p.name or "") == port_name for p in es.ports):
            continue
        for ep in es.endpoints:
            for address in ep.addresses[:1]:  # kube-proxy uses an endpoint's first address only
                seen.setdefault(address, _candidate(service, ep, address))
    return tuple(seen.values())


def _family(cluster_ip: str | None) -> str | None:
    try:
        return "IPv6" if ipaddress.ip_address(cluster_ip or "").version == 6 else "IPv4"
    except ValueError:
        return None


def _candidate(service: Service, ep: Endpoint, address: str) -> Candidate:
    ref = ep.target_ref
    own_pod = ref is not None and ref.kind == "Pod" and ref.namespace in (None, service.key.namespace)
    c = ep.conditions
    return Candidate(
        address=address,
        pod=ref.name if own_pod and ref is not None else None,
        node=ep.node_name,
        zone=ep.zone,
        ready=c.effective_ready,
        serving=c.effective_serving,
        terminating=c.effective_terminating,
        hints_zones=ep.hints_zones,
        hints_nodes=ep.hints_nodes,
    )


def policy_of(service: Service) -> Policy:
    return Policy.LOCAL if service.internal_traffic_policy == Policy.LOCAL.value else Policy.CLUSTER


def topology_mode(endpoints: Sequence[Candidate], client: Client) -> tuple[TopologyMode, tuple[str, ...]]:
    """The hint set kube-proxy on the client's node applies, with the reason when hints are ignored."""
    ready = [c for c in endpoints if c.ready]
    if not ready:
        return TopologyMode.NONE, ()
    reasons: list[str] = []
    missing_node = [c.name for c in ready if not c.hints_nodes]
    if not missing_node:
        if client.node is not None and any(client.node in c.hints_nodes for c in ready):
            return TopologyMode.SAME_NODE, ()
        reasons.append(f"node hints ignored: no endpoint is hinted for node {client.node or '(unknown)'}")
    elif len(missing_node) < len(ready):
        reasons.append(f"node hints ignored: endpoint {missing_node[0]} has none")
    missing_zone = [c.name for c in ready if not c.hints_zones]
    if not missing_zone:
        if client.zone and any(client.zone in c.hints_zones for c in ready):
            return TopologyMode.SAME_ZONE, tuple(reasons)
        if not client.zone:
            reasons.append("zone hints ignored: the client's node has no topology.kubernetes.io/zone label")
        else:
            reasons.append(f"zone hints ignored: no endpoint is hinted for zone {client.zone}")
    elif len(missing_zone) < len(ready):
        reasons.append(f"zone hints ignored: endpoint {missing_zone[0]} has none")
    return TopologyMode.NONE, tuple(reasons)


def _available(c: Candidate, mode: TopologyMode, client: Client) -> bool:
    if mode is TopologyMode.SAME_NODE:
        return client.node in c.hints_nodes
    if mode is TopologyMode.SAME_ZONE:
        return client.zone in c.hints_zones
    return True


def expect(service: Service, endpoints: Sequence[Candidate], client: Client) -> Expectation:
    """The endpoints the kube-proxy of ``client.node`` may send a new connection to, with reasons."""
    policy = policy_of(service)
    sticky = service.affinity_timeout_s if service.session_affinity == "ClientIP" else None
    reasons: list[str] = []
    if sticky is not None:
        reasons.append(
            f"ClientIP affinity: each client address stays on one of these for {sticky} s after its last"
            " new connection"
        )

    def result(fate: Fate, chosen: Sequence[Candidate] = (), **kw: object) -> Expectation:
        mode = kw.get("mode", TopologyMode.NONE)
        fallback = bool(kw.get("fallback", False))
        assert isinstance(mode, TopologyMode)
        return Expectation(fate, tuple(chosen), policy, mode, fallback, sticky, tuple(reasons), client.node)

    usable_anywhere = [c for c in endpoints if c.ready or c.serving_terminating]
    if not usable_anywhere:
        reasons.insert(0, "no ready or serving endpoint: kube-proxy rejects connections (refused at once)")
        return result(Fate.REJECTED)

    if policy is Policy.LOCAL:
        if client.node is None:
            reasons.insert(
                0, "internalTrafficPolicy Local: the answer depends on the client's node (unknown)"
            )
            return result(Fate.UNKNOWN)
        local = [c for c in endpoints if c.node == client.node]
        chosen = [c for c in local if c.ready]
        fallback = False
        if not chosen:
            chosen = [c for c in local if c.serving_terminating]
            fallback = bool(chosen)
        if not chosen:
            reasons.insert(
                0,
                f"internalTrafficPolicy Local and no endpoint on node {client.node}: traffic is dropped"
                " (a timeout, not a refusal)",
            )
            return result(Fate.DROPPED)
        lead = f"internalTrafficPolicy Local: only endpoints on node {client.node}"
        if fallback:
            lead += "; none of them is ready, so the serving-terminating ones are used"
        reasons.insert(0, lead)
        return result(Fate.ROUTED, chosen, fallback=fallback)

    ready = [c for c in endpoints if c.ready]
    mode, ignored = topology_mode(endpoints, client)
    node_unknown = client.node is None and bool(ready) and all(c.hints_nodes for c in ready)
    zone_unknown = (
        mode is TopologyMode.NONE
        and client.zone is None
        and bool(ready)
        and all(c.hints_zones for c in ready)
    )
    if node_unknown or zone_unknown:
        reasons.insert(
            0, "topology hints are set: the answer depends on the client's node and zone (unknown)"
        )
        return result(Fate.UNKNOWN)
    chosen = [c for c in endpoints if c.ready and _available(c, mode, client)]
    fallback = False
    if not chosen:
        chosen = [c for c in endpoints if c.serving_terminating]
        fallback = True
    lead = {
        TopologyMode.NONE: "every ready endpoint (no topology rule applies)",
        TopologyMode.SAME_NODE: f"node hints: only endpoints hinted for node {client.node}",
        TopologyMode.SAME_ZONE: f"zone hints: only endpoints hinted for zone {client.zone}",
    }[mode]
    if fallback:
        lead = "no ready endpoint: the serving-terminating ones are used"
    reasons[:0] = [lead, *ignored]
    return result(Fate.ROUTED, chosen, mode=mode, fallback=fallback)
