"""The routing rule in effect for a Service, for its page: what is declared, what each endpoint carries,
the rule in words, and per node of the cluster the endpoints that node's kube-proxy may pick.

Pure reads of the watch cache; the rules themselves are ``app.routing``'s. Nodes come from the Node watch
when svcscope may list Nodes; without that permission the nodes named by the endpoints stand in (an
endpoint's zone is copied from its node's label), and the page says node zones are unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app import routing
from app.domain import Node, Service
from app.kube.cache import ServiceCache

VALUE_MAX = 120  # characters of an annotation value shown (annotations may be 256 KiB)
NODES_SHOWN = 50  # node rows on the page; a bigger cluster gets "and N more"
ENDPOINTS_SHOWN = 100  # endpoint names in one node's row


@dataclass(frozen=True, slots=True)
class NodeRow:
    """What a client on one node gets: the endpoints its kube-proxy may pick, or why none."""

    node: str
    zone: str | None  # None: unknown; "": the node has no zone label
    ready: bool | None  # None: the Node object is not known
    fate: str  # a routing.Fate value
    endpoints: tuple[str, ...]
    more: int  # endpoints beyond ENDPOINTS_SHOWN
    reason: str

    @property
    def summary(self) -> str:
        if self.fate == routing.Fate.DROPPED:
            return "dropped: no local endpoint"
        if self.fate == routing.Fate.REJECTED:
            return "refused: no usable endpoint"
        if self.fate == routing.Fate.UNKNOWN:
            return "unknown: the node's zone is not known"
        return f"{len(self.endpoints) + self.more} endpoint(s)"


@dataclass(frozen=True, slots=True)
class RuleView:
    report: routing.RuleReport
    annotation: str | None  # the topology annotation's value, cut to VALUE_MAX
    endpoints: tuple[routing.Candidate, ...]  # at most ENDPOINTS_SHOWN
    more_endpoints: int
    nodes: tuple[NodeRow, ...]
    more_nodes: int
    nodes_unknown: str | None  # why Node objects are not known (None: they are)
    sticky_s: int | None


def clip(text: str | None, limit: int = VALUE_MAX) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f"… ({len(text) - limit} more characters)"


def node_rows(
    service: Service, endpoints: Sequence[routing.Candidate], nodes: Sequence[Node], *, known: bool
) -> tuple[list[NodeRow], int]:
    """One row per node (by name, at most NODES_SHOWN) with the expectation for a client there.
    ``known``: the nodes are Node objects (their readiness is real), not stand-ins."""
    rows: list[NodeRow] = []
    for node in nodes[:NODES_SHOWN]:
        client = routing.Client(node.name, node.zone or "")
        exp = routing.expect(service, endpoints, client)
        names = sorted(c.name for c in exp.endpoints)
        rows.append(
            NodeRow(
                node=node.name,
                zone=node.zone or "",
                ready=node.ready if known else None,
                fate=exp.fate.value,
                endpoints=tuple(names[:ENDPOINTS_SHOWN]),
                more=max(0, len(names) - ENDPOINTS_SHOWN),
                reason=exp.reasons[0] if exp.reasons else "",
            )
        )
    return rows, max(0, len(nodes) - NODES_SHOWN)


def nodes_from_endpoints(endpoints: Sequence[routing.Candidate]) -> list[Node]:
    """Stand-ins for Node objects that may not be read: the nodes the endpoints name, with their zones."""
    zones: dict[str, str | None] = {}
    for c in endpoints:
        if c.node:
            zones[c.node] = zones.get(c.node) or c.zone
    return [Node(name, zone, None, (), ready=True) for name, zone in sorted(zones.items())]


def rule_view(cache: ServiceCache, service: Service) -> RuleView:
    endpoints = routing.candidates(service, cache.slices_for(service.key))
    unknown = cache.nodes_unknown()
    nodes = cache.nodes() if unknown is None else nodes_from_endpoints(endpoints)
    zones = [n.zone for n in nodes if n.zone]
    rows, more = node_rows(service, endpoints, nodes, known=unknown is None)
    sticky = service.affinity_timeout_s if service.session_affinity == "ClientIP" else None
    return RuleView(
        report=routing.explain(service, endpoints, zones if unknown is None else ()),
        annotation=clip(routing.topology_annotation(service)),
        endpoints=endpoints[:ENDPOINTS_SHOWN],
        more_endpoints=max(0, len(endpoints) - ENDPOINTS_SHOWN),
        nodes=tuple(rows),
        more_nodes=more,
        nodes_unknown=unknown,
        sticky_s=sticky,
    )
