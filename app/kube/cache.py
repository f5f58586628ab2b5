"""In-memory store of Services, EndpointSlices and Pods (pure, synchronous).

The watchers (``app.kube.watch``) are the only writers; the catalog (``app.catalog``: list and
detail views), SSE streams and the probe engine read. Nothing here does I/O, so a page view never
calls the Kubernetes API.

Every mutation bumps :attr:`ServiceCache.version` and calls the subscribers with a
:class:`Change` (the event hub turns that into SSE pushes). Indexes keep the reads fast with
thousands of Services: slices by Service, pods by namespace + label, pods by IP, a lower-case
search text per Service, cached endpoint counts and a cached name order.

Longer than most modules on purpose: every index is written in the same few methods that write the
objects it indexes, so the store and its indexes cannot drift apart.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.domain import EndpointSlice, Node, ObjectKey, Pod, PodKey, Service, ServiceKey

log = logging.getLogger(__name__)

ALL_NAMESPACES = ""  # the scope of a cluster-wide watch
REMOVED_KEPT = 16  # ready addresses remembered per Service after they left it
REMOVED_MAX_AGE_S = 600.0


class Kind(enum.StrEnum):
    SERVICES = "services"
    ENDPOINTSLICES = "endpointslices"
    PODS = "pods"
    NODES = "nodes"  # cluster-scoped: watched once, in scope ALL_NAMESPACES, whatever the namespaces


# What the dashboard cannot work without: readiness waits for these. Nodes only add where each node is.
NAMESPACED_KINDS = (Kind.SERVICES, Kind.ENDPOINTSLICES, Kind.PODS)
NODE_ADDRESS_TYPES = frozenset({"InternalIP", "ExternalIP"})  # not Hostname/InternalDNS: names, not IPs
NODES_FORBIDDEN = "node zones unknown: no permission to list nodes"


@dataclass(frozen=True, slots=True)
class Change:
    """One mutation of the cache. ``key`` is None when a whole scope was replaced (re-list)."""

    version: int
    kind: Kind
    namespace: str  # "" for a cluster-wide replace
    key: ObjectKey | None = None
    service: ServiceKey | None = None  # the Service a slice belongs to, when known


@dataclass(slots=True)
class ScopeStatus:
    """Sync state of one (resource, namespace scope) watch."""

    synced: bool = False
    problem: str | None = None  # shown to the user, e.g. RBAC Forbidden
    forbidden: bool = False
    relists: int = 0

    @property
    def settled(self) -> bool:
        """Listed once, or known to be unlistable (Forbidden): nothing more to wait for."""
        return self.synced or self.forbidden


@dataclass(frozen=True, slots=True)
class Problem:
    kind: Kind
    scope: str
    message: str


@dataclass(frozen=True, slots=True)
class RemovedEndpoint:
    """A ready address that left a Service's endpoints (its pod went away or stopped being ready).

    Kept for a while because kube-proxy may still send connections there: its rules follow the
    EndpointSlices on its own schedule, and conntrack keeps established flows to the old address."""

    ip: str
    pod: str | None
    at: float  # monotonic


@dataclass(frozen=True, slots=True)
class EndpointCounts:
    ready: int
    total: int


Subscriber = Callable[[Change], None]


@dataclass(slots=True)
class _Indexes:
    slices_by_service: dict[ServiceKey, set[ObjectKey]] = field(default_factory=dict)
    pods_by_label: dict[tuple[str, str, str], set[PodKey]] = field(default_factory=dict)
    pods_by_ns: dict[str, set[PodKey]] = field(default_factory=dict)
    pods_by_ip: dict[str, PodKey] = field(default_factory=dict)


class ServiceCache:
    """The store. ``scopes`` lists the namespaces watched (``[""]`` = all namespaces)."""

    def __init__(
        self, scopes: Sequence[str] = (ALL_NAMESPACES,), *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.clock = clock
        self._removed: dict[ServiceKey, deque[RemovedEndpoint]] = {}
        self.scopes: tuple[str, ...] = tuple(scopes) or (ALL_NAMESPACES,)
        self.version = 0
        self._services: dict[ServiceKey, Service] = {}
        self._raw_services: dict[ServiceKey, Mapping[str, Any]] = {}
        self._slices: dict[ObjectKey, EndpointSlice] = {}
        self._pods: dict[PodKey, Pod] = {}
        self._ix = _Indexes()
        self._search_text: dict[ServiceKey, str] = {}
        self._counts: dict[ServiceKey, EndpointCounts] = {}
        self._sorted: list[ServiceKey] | None = None
        # Sorted key lists per order name, valid while the generations they were built at hold.
        self._services_gen = 0
        self._slices_gen = 0
        self._orders: dict[str, tuple[tuple[int, int], list[ServiceKey]]] = {}
        self._ns_objects: Counter[str] = Counter()
        self._status: dict[tuple[Kind, str], ScopeStatus] = {
            (kind, scope): ScopeStatus() for kind in NAMESPACED_KINDS for scope in self.scopes
        }
        self._status[(Kind.NODES, ALL_NAMESPACES)] = ScopeStatus()
        self._node_objects: dict[str, Node] = {}
        self._subscribers: list[Subscriber] = []
        # Node addresses as the pods report them, rebuilt on the first read after a pod changed.
        self._hosts_gen = 0
        self._nodes: tuple[int, frozenset[str], frozenset[str]] | None = None

    # -- subscriptions -------------------------------------------------------------------------

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(change)`` after every mutation; returns the unsubscribe function."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def _emit(
        self, kind: Kind, namespace: str, key: ObjectKey | None = None, service: ServiceKey | None = None
    ) -> None:
        self.version += 1
        change = Change(self.version, kind, namespace, key, service)
        for callback in tuple(self._subscribers):
            try:
                callback(change)
            except Exception:  # a broken subscriber must not break the watch
                log.exception("cache subscriber failed")

    # -- sync state ----------------------------------------------------------------------------

    def status(self, kind: Kind, scope: str) -> ScopeStatus:
        return self._status.setdefault((kind, scope), ScopeStatus())

    def mark_synced(self, kind: Kind, scope: str) -> None:
        st = self.status(kind, scope)
        st.synced, st.problem, st.forbidden = True, None, False
        self._emit(kind, scope)

    def set_problem(self, kind: Kind, scope: str, message: str | None, *, forbidden: bool = False) -> None:
        st = self.status(kind, scope)
        if (st.problem, st.forbidden) == (message, forbidden):
            return
        st.problem, st.forbidden = message, forbidden
        self._emit(kind, scope)

    @property
    def synced(self) -> bool:
        """Every watched (resource, scope) has listed once or is known to be Forbidden."""
        return all(st.settled for (kind, _), st in self._status.items() if kind is not Kind.NODES)

    def problems(self) -> list[Problem]:
        return [
            Problem(kind, scope, st.problem)
            for (kind, scope), st in sorted(self._status.items())
            if st.problem is not None and not (kind is Kind.NODES and st.forbidden)
        ]

    def nodes_unknown(self) -> str | None:
        """Why node zones are not known (None: they are), in the words the pages show."""
        st = self.status(Kind.NODES, ALL_NAMESPACES)
        if st.forbidden:
            return NODES_FORBIDDEN
        if not st.synced:
            return "node zones unknown: nodes not listed yet"
        return None

    def sync_state(self) -> dict[str, dict[str, bool]]:
        state = {
            kind.value: {scope or "*": self.status(kind, scope).synced for scope in self.scopes}
            for kind in NAMESPACED_KINDS
        }
        state[Kind.NODES.value] = {"*": self.status(Kind.NODES, ALL_NAMESPACES).synced}
        return state

    # -- writes: services ----------------------------------------------------------------------

    def upsert_service(self, svc: Service, raw: Mapping[str, Any] | None = None) -> None:
        self._put_service(svc, raw)
        self._emit(Kind.SERVICES, svc.key.namespace, svc.key, svc.key)

    def delete_service(self, key: ServiceKey) -> None:
        self._removed.pop(key, None)  # a later Service of that name starts with no history
        if self._drop_service(key):
            self._emit(Kind.SERVICES, key.namespace, key, key)

    def _put_service(self, svc: Service, raw: Mapping[str, Any] | None) -> None:
        key = svc.key
        if key not in self._services:
            self._sorted = None
            self._ns_objects[key.namespace] += 1
        self._services[key] = svc
        self._services_gen += 1
        if raw is not None:
            self._raw_services[key] = raw
        parts = [key.name, key.namespace, svc.cluster_ip or "", *svc.cluster_ips, svc.external_name or ""]
        parts.extend(f"{k}={v}" for k, v in svc.labels.items())
        self._search_text[key] = "\n".join(parts).lower()

    def _drop_service(self, key: ServiceKey) -> bool:
        if self._services.pop(key, None) is None:
            return False
        self._raw_services.pop(key, None)
        self._search_text.pop(key, None)
        self._services_gen += 1
        self._sorted = None
        self._dec_ns(key.namespace)
        return True

    # -- writes: endpoint slices ---------------------------------------------------------------

    def upsert_slice(self, es: EndpointSlice) -> None:
        old = self._slices.get(es.key)
        self._put_slice(es)
        svc = self._slice_service(es)
        if old is not None:
            self._note_removed(old)
        if old is not None and (old_svc := self._slice_service(old)) != svc and old_svc is not None:
            self._emit(Kind.ENDPOINTSLICES, es.key.namespace, es.key, old_svc)
        self._emit(Kind.ENDPOINTSLICES, es.key.namespace, es.key, svc)

    def delete_slice(self, key: ObjectKey) -> None:
        old = self._slices.get(key)
        if old is not None and self._drop_slice(key):
            self._note_removed(old)
            self._emit(Kind.ENDPOINTSLICES, key.namespace, key, self._slice_service(old))

    def _note_removed(self, old: EndpointSlice) -> None:
        """Remember the ready addresses of ``old`` that no slice of its Service has ready any more."""
        svc = self._slice_service(old)
        if svc is None:
            return
        was = {
            (addr, ep.target_ref.name if ep.target_ref else None)
            for ep in old.endpoints
            if ep.conditions.effective_ready
            for addr in ep.addresses
        }
        if not was:
            return
        still = self._ready_addresses(svc)
        now = self.clock()
        for addr, pod in sorted(was, key=lambda x: x[0]):
            if addr not in still:
                self._removed.setdefault(svc, deque(maxlen=REMOVED_KEPT)).append(
                    RemovedEndpoint(addr, pod, now)
                )

    def _ready_addresses(self, key: ServiceKey) -> set[str]:
        return {
            addr
            for es in self.slices_for(key)
            for ep in es.endpoints
            if ep.conditions.effective_ready
            for addr in ep.addresses
        }

    def removed_endpoints(
        self, key: ServiceKey, within_s: float = REMOVED_MAX_AGE_S
    ) -> list[RemovedEndpoint]:
        """Ready addresses that left the Service within ``within_s`` s and are not back; newest first."""
        now = self.clock()
        current = self._ready_addresses(key)
        seen: set[str] = set()
        out: list[RemovedEndpoint] = []
        for r in reversed(self._removed.get(key, ())):
            if now - r.at <= within_s and r.ip not in current and r.ip not in seen:
                seen.add(r.ip)
                out.append(r)
        return out

    @staticmethod
    def _slice_service(es: EndpointSlice) -> ServiceKey | None:
        return ServiceKey(es.key.namespace, es.service_name) if es.service_name else None

    def _put_slice(self, es: EndpointSlice) -> None:
        old = self._slices.get(es.key)
        if old is not None:
            self._unindex_slice(old)
        else:
            self._ns_objects[es.key.namespace] += 1
        self._slices[es.key] = es
        self._slices_gen += 1
        if (svc := self._slice_service(es)) is not None:
            self._ix.slices_by_service.setdefault(svc, set()).add(es.key)
            self._counts.pop(svc, None)

    def _unindex_slice(self, es: EndpointSlice) -> None:
        if (svc := self._slice_service(es)) is not None:
            keys = self._ix.slices_by_service.get(svc)
            if keys is not None:
                keys.discard(es.key)
                if not keys:
                    del self._ix.slices_by_service[svc]
            self._counts.pop(svc, None)

    def _drop_slice(self, key: ObjectKey) -> bool:
        old = self._slices.pop(key, None)
        if old is None:
            return False
        self._slices_gen += 1
        self._unindex_slice(old)
        self._dec_ns(key.namespace)
        return True

    # -- writes: pods --------------------------------------------------------------------------

    def upsert_pod(self, pod: Pod) -> None:
        self._put_pod(pod)
        self._emit(Kind.PODS, pod.key.namespace, pod.key)

    def delete_pod(self, key: PodKey) -> None:
        if self._drop_pod(key):
            self._emit(Kind.PODS, key.namespace, key)

    def _put_pod(self, pod: Pod) -> None:
        old = self._pods.get(pod.key)
        if old is not None:
            self._unindex_pod(old)
        else:
            self._ns_objects[pod.key.namespace] += 1
        self._pods[pod.key] = pod
        self._hosts_gen += 1
        ns = pod.key.namespace
        self._ix.pods_by_ns.setdefault(ns, set()).add(pod.key)
        for k, v in pod.labels.items():
            self._ix.pods_by_label.setdefault((ns, k, v), set()).add(pod.key)
        for ip in pod.pod_ips or ((pod.pod_ip,) if pod.pod_ip else ()):
            self._ix.pods_by_ip[ip] = pod.key

    def _unindex_pod(self, pod: Pod) -> None:
        self._hosts_gen += 1
        ns = pod.key.namespace
        if (keys := self._ix.pods_by_ns.get(ns)) is not None:
            keys.discard(pod.key)
            if not keys:
                del self._ix.pods_by_ns[ns]
        for k, v in pod.labels.items():
            if (keys := self._ix.pods_by_label.get((ns, k, v))) is not None:
                keys.discard(pod.key)
                if not keys:
                    del self._ix.pods_by_label[(ns, k, v)]
        for ip in pod.pod_ips or ((pod.pod_ip,) if pod.pod_ip else ()):
            if self._ix.pods_by_ip.get(ip) == pod.key:
                del self._ix.pods_by_ip[ip]

    def _drop_pod(self, key: PodKey) -> bool:
        old = self._pods.pop(key, None)
        if old is None:
            return False
        self._unindex_pod(old)
        self._dec_ns(key.namespace)
        return True

    def _dec_ns(self, namespace: str) -> None:
        self._ns_objects[namespace] -= 1
        if self._ns_objects[namespace] <= 0:
            del self._ns_objects[namespace]

    # -- writes: nodes ---------------------------------------------------------------------------

    def upsert_node(self, node: Node) -> None:
        self._node_objects[node.name] = node
        self._hosts_gen += 1
        self._emit(Kind.NODES, ALL_NAMESPACES, ObjectKey("", node.name))

    def delete_node(self, name: str) -> None:
        if self._node_objects.pop(name, None) is not None:
            self._hosts_gen += 1
            self._emit(Kind.NODES, ALL_NAMESPACES, ObjectKey("", name))

    # -- writes: re-list -----------------------------------------------------------------------

    def replace(self, kind: Kind, scope: str, objects: Iterable[Any]) -> None:
        """Atomically replace everything of ``kind`` in ``scope`` ("" = all namespaces) after a list.

        ``objects`` are domain objects, or ``(Service, raw)`` pairs for Services. Readers never see a
        half-replaced store: this runs without yielding to the event loop.
        """

        def in_scope(key: ObjectKey) -> bool:
            return scope == ALL_NAMESPACES or key.namespace == scope

        if kind is Kind.SERVICES:
            for key in [k for k in self._services if in_scope(k)]:
                self._drop_service(key)
            for item in objects:
                svc, raw = item if isinstance(item, tuple) else (item, None)
                self._put_service(svc, raw)
        elif kind is Kind.NODES:
            self._node_objects = {node.name: node for node in objects}
            self._hosts_gen += 1
        elif kind is Kind.ENDPOINTSLICES:
            for key in [k for k in self._slices if in_scope(k)]:
                self._drop_slice(key)
            for es in objects:
                self._put_slice(es)
        else:
            for key in [k for k in self._pods if in_scope(k)]:
                self._drop_pod(key)
            for pod in objects:
                self._put_pod(pod)
        self.status(kind, scope).relists += 1
        self._emit(kind, scope)

    # -- reads ---------------------------------------------------------------------------------

    def service(self, key: ServiceKey) -> Service | None:
        return self._services.get(key)

    def raw_service(self, key: ServiceKey) -> Mapping[str, Any] | None:
        return self._raw_services.get(key)

    def services(self) -> list[Service]:
        return [self._services[k] for k in self._sorted_keys()]

    def slice(self, key: ObjectKey) -> EndpointSlice | None:
        return self._slices.get(key)

    def slices_for(self, key: ServiceKey) -> list[EndpointSlice]:
        """The EndpointSlices labelled ``kubernetes.io/service-name=<name>`` in the Service's namespace."""
        return [self._slices[k] for k in sorted(self._ix.slices_by_service.get(key, ()))]

    def pod(self, key: PodKey) -> Pod | None:
        return self._pods.get(key)

    def node(self, name: str) -> Node | None:
        return self._node_objects.get(name)

    def nodes(self) -> list[Node]:
        """Every node, by name (empty while nodes are not known: see ``nodes_unknown``)."""
        return [self._node_objects[n] for n in sorted(self._node_objects)]

    def pod_by_ip(self, ip: str) -> Pod | None:
        key = self._ix.pods_by_ip.get(ip)
        return self._pods.get(key) if key is not None else None

    def host_addresses(self) -> frozenset[str]:
        """The nodes' addresses: the watched Nodes' own (InternalIP, ExternalIP) and what the watched pods
        report (status.hostIP), so a node without a watched pod, or an install that may not read Nodes,
        still has its address known."""
        return self._node_addresses()[0]

    def gateway_addresses(self) -> frozenset[str]:
        """Likely pod-network gateways: the first address of each /24 that holds a (non-hostNetwork) pod.

        Bridge CNIs (bridge, flannel, kindnet) give each node a /24 and the node itself its first address;
        without read access to Node objects (their podCIDRs) this is the best the pods tell."""
        return self._node_addresses()[1]

    def _node_addresses(self) -> tuple[frozenset[str], frozenset[str]]:
        if self._nodes is None or self._nodes[0] != self._hosts_gen:
            hosts = {p.host_ip for p in self._pods.values() if p.host_ip}
            for n in self._node_objects.values():
                for a in n.addresses:
                    if a.type in NODE_ADDRESS_TYPES and (ip := _canonical_ip(a.address)) is not None:
                        hosts.add(ip)
            gateways: set[str] = set()
            for p in self._pods.values():
                for ip in p.pod_ips:
                    if ip in hosts or ":" in ip:
                        continue
                    try:
                        first = str(ipaddress.ip_network(f"{ip}/24", strict=False).network_address + 1)
                    except ValueError:  # not an address: nothing to derive
                        continue
                    if first not in self._ix.pods_by_ip:
                        gateways.add(first)
            self._nodes = (self._hosts_gen, frozenset(hosts), frozenset(gateways))
        return self._nodes[1], self._nodes[2]

    def pods_matching(self, namespace: str, selector: Mapping[str, str]) -> list[Pod]:
        """Pods in ``namespace`` whose labels contain every ``selector`` pair (empty selector: none)."""
        if not selector:
            return []
        sets = []
        for k, v in selector.items():
            keys = self._ix.pods_by_label.get((namespace, k, v))
            if not keys:
                return []
            sets.append(keys)
        sets.sort(key=len)
        found = set(sets[0]).intersection(*sets[1:])
        return [self._pods[k] for k in sorted(found)]

    def pods_in(self, namespace: str) -> list[Pod]:
        """Every cached pod of ``namespace``, by name."""
        return [self._pods[k] for k in sorted(k for k in self._pods if k.namespace == namespace)]

    def pods_for_service(self, key: ServiceKey) -> list[Pod]:
        """The pods behind a Service: slice targetRefs first, the selector as fallback."""
        found: dict[PodKey, Pod] = {}
        for es in self.slices_for(key):
            for ep in es.endpoints:
                ref = ep.target_ref
                if ref is not None and ref.kind == "Pod":
                    pod = self._pods.get(PodKey(ref.namespace or key.namespace, ref.name))
                    if pod is not None:
                        found[pod.key] = pod
        svc = self._services.get(key)
        if svc is not None and svc.selector:
            for pod in self.pods_matching(key.namespace, svc.selector):
                found.setdefault(pod.key, pod)
        return [found[k] for k in sorted(found)]

    def endpoint_counts(self, key: ServiceKey) -> EndpointCounts:
        """Ready and total endpoints over all slices (an endpoint seen in two families counts once)."""
        cached = self._counts.get(key)
        if cached is not None:
            return cached
        seen: dict[object, bool] = {}
        for es in self.slices_for(key):
            for ep in es.endpoints:
                ref = ep.target_ref
                ident: object = (ref.kind, ref.namespace, ref.name) if ref else ep.addresses
                ready = ep.conditions.effective_ready
                seen[ident] = seen.get(ident, False) or ready
        counts = EndpointCounts(ready=sum(seen.values()), total=len(seen))
        self._counts[key] = counts
        return counts

    def namespaces(self) -> list[str]:
        """Namespaces with at least one cached object, plus the configured scopes."""
        names = set(self._ns_objects) | {s for s in self.scopes if s}
        return sorted(names)

    def knows_namespace(self, namespace: str) -> bool:
        return namespace in self._ns_objects or namespace in self.scopes

    def sizes(self) -> dict[Kind, int]:
        return {
            Kind.SERVICES: len(self._services),
            Kind.ENDPOINTSLICES: len(self._slices),
            Kind.PODS: len(self._pods),
            Kind.NODES: len(self._node_objects),
        }

    def endpoint_total(self) -> int:
        return sum(len(es.endpoints) for es in self._slices.values())

    def _sorted_keys(self) -> list[ServiceKey]:
        if self._sorted is None:
            self._sorted = sorted(self._services)
        return self._sorted

    # -- reads for the catalog's list: orders and search text kept with the store they index ---

    def ordered(
        self, order: str, key: Callable[[Service], Any] | None = None, *, by_endpoints: bool = False
    ) -> list[ServiceKey]:
        """Every Service key sorted by ``key`` (None: namespace, then name), remembered under the name
        ``order`` until the Services change (or, with ``by_endpoints``, the EndpointSlices too)."""
        gen = (self._services_gen, self._slices_gen if by_endpoints else 0)
        cached = self._orders.get(order)
        if cached is not None and cached[0] == gen:
            return cached[1]
        if key is None:
            keys = self._sorted_keys()
        else:
            keys = [s.key for s in sorted(self._services.values(), key=key)]
        self._orders[order] = (gen, keys)
        return keys

    def search_texts(self) -> Mapping[ServiceKey, str]:
        """Per Service, the lower-case text a search matches: name, namespace, IPs, labels."""
        return self._search_text

    def services_of(self, keys: Iterable[ServiceKey]) -> list[Service]:
        services = self._services
        return [services[k] for k in keys]


def _canonical_ip(text: str) -> str | None:
    """An address as the probe rules compare them (``2001:db8::1``, not ``2001:DB8:0::1``), or None."""
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None
