"""The Services list: what a user asks for (namespace, search, types, sort, page) and the rows it gets.

Pure reads of the watch cache; the cache keeps the indexes (orders, search text) that make this fast
with thousands of Services, this module decides what they mean.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.domain import Service, ServiceType
from app.kube.cache import EndpointCounts, Problem, ServiceCache


class SortField(enum.StrEnum):
    NAME = "name"
    NAMESPACE = "namespace"
    TYPE = "type"
    CLUSTER_IP = "ip"
    ENDPOINTS = "endpoints"
    AGE = "age"


class TypeFilter(enum.StrEnum):
    """What the list's type filter offers. ``ClusterIP`` is a Service with a virtual IP, ``Headless`` one
    with ``clusterIP: None``: two choices that do not overlap."""

    CLUSTER_IP = "ClusterIP"
    HEADLESS = "Headless"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"
    EXTERNAL_NAME = "ExternalName"
    ALL = "all"  # a query value only: every type


# What the list shows when the user has not chosen: ClusterIP Services, headless ones included.
DEFAULT_TYPES = frozenset({TypeFilter.CLUSTER_IP, TypeFilter.HEADLESS})


@dataclass(frozen=True, slots=True)
class ServiceQuery:
    namespace: str | None = None
    search: str = ""
    types: frozenset[TypeFilter] = DEFAULT_TYPES  # empty: every type
    sort: SortField = SortField.NAME
    descending: bool = False
    page: int = 1
    page_size: int = 50


@dataclass(frozen=True, slots=True)
class QueryResult:
    services: list[Service]
    total: int  # matching the filters, before pagination
    page: int
    pages: int


def _matches_type(svc: Service, types: frozenset[TypeFilter]) -> bool:
    if not types:
        return True
    if svc.type is ServiceType.CLUSTER_IP:
        return (TypeFilter.HEADLESS if svc.headless else TypeFilter.CLUSTER_IP) in types
    return TypeFilter(svc.type.value) in types


def _ip_sort_key(svc: Service) -> tuple[int, int]:
    try:
        ip = ipaddress.ip_address(svc.cluster_ip or "")
    except ValueError:
        return (9, 0)  # headless / ExternalName last
    return (ip.version, int(ip))


@dataclass(frozen=True, slots=True)
class ServiceRow:
    service: Service
    endpoints: EndpointCounts
    reason: str | None = None  # why no (or not every) endpoint is ready, in a few words

    @property
    def probeable(self) -> bool:
        """A virtual IP and a port: something a probe can be sent to."""
        svc = self.service
        return svc.has_virtual_ip and bool(svc.ports) and svc.type is not ServiceType.EXTERNAL_NAME

    @property
    def selector_text(self) -> str:
        sel = self.service.selector
        return ",".join(f"{k}={v}" for k, v in sorted(sel.items())) if sel else ""

    @property
    def type_label(self) -> str:
        return "ClusterIP (headless)" if self.service.headless else self.service.type.value

    @property
    def ip_text(self) -> str:
        svc = self.service
        if svc.type is ServiceType.EXTERNAL_NAME:
            return f"→ {svc.external_name}" if svc.external_name else ""
        if svc.headless:
            return "None (headless)"
        return ", ".join(svc.cluster_ips or ((svc.cluster_ip,) if svc.cluster_ip else ()))


@dataclass(frozen=True, slots=True)
class ServiceList:
    rows: list[ServiceRow]
    total: int
    page: int
    pages: int
    query: ServiceQuery
    namespaces: list[str]
    problems: list[Problem]
    synced: bool


def service_list(cache: ServiceCache, query: ServiceQuery) -> ServiceList:
    result = run_query(cache, query)
    rows = []
    for svc in result.services:
        counts = cache.endpoint_counts(svc.key)
        rows.append(ServiceRow(svc, counts, endpoint_reason(cache, svc, counts)))
    return ServiceList(
        rows=rows,
        total=result.total,
        page=result.page,
        pages=result.pages,
        query=query,
        namespaces=cache.namespaces(),
        problems=cache.problems(),
        synced=cache.synced,
    )


def endpoint_reason(cache: ServiceCache, svc: Service, counts: EndpointCounts) -> str | None:
    """In a few words, why a Service's endpoint badge is not all green (the detail page says more)."""
    if svc.type is ServiceType.EXTERNAL_NAME or (counts.total and counts.ready == counts.total):
        return None
    if counts.total:
        if counts.ready:
            return f"{counts.total - counts.ready} of {counts.total} endpoints not ready"
        return f"none of the {counts.total} endpoint(s) is ready (pods not ready or terminating)"
    if not svc.selector:
        return "no selector and no EndpointSlice: endpoints are managed by hand and there are none"
    pods = cache.pods_matching(svc.key.namespace, svc.selector)
    if not pods:
        return "the selector matches no pods"
    return f"{len(pods)} pod(s) match the selector but none is an endpoint yet (not running or no IP)"


def unanswerable(cache: ServiceCache, svc: Service) -> str | None:
    """Why a probe of this Service could get no answer at all, or None when some endpoint can answer.

    kube-proxy sends a Service's traffic to ready endpoints, falling back to serving (terminating) ones;
    with neither it rejects every connection, so a probe would only collect failures.
    """
    if not svc.has_virtual_ip:
        return None
    for es in cache.slices_for(svc.key):
        if any(e.conditions.effective_serving for e in es.endpoints):
            return None
    counts = cache.endpoint_counts(svc.key)
    reason = endpoint_reason(cache, svc, counts) or "no endpoint is serving"
    return (
        f"no ready endpoints: nothing would answer ({reason}). kube-proxy rejects connections to a "
        "Service without serving endpoints, so every request would fail; the Service's diagnostics say more."
    )


def _extra_search_text(svc: Service) -> str:
    """What a search matches beyond the cache's text: ports (name, number, protocol) and affinity."""
    ports = " ".join(f"{p.label} {p.app_protocol or ''}" for p in svc.ports)
    return f"{ports} {svc.session_affinity}".lower()


def _sort_key(cache: ServiceCache, sort: SortField) -> Callable[[Service], Any] | None:
    def endpoints(s: Service) -> tuple[int, int]:
        counts = cache.endpoint_counts(s.key)
        return (counts.ready, counts.total)

    def age(s: Service) -> float:  # ascending age = newest first; unknown creation last
        return -s.created.timestamp() if s.created else float("inf")

    keys: dict[SortField, Callable[[Service], Any] | None] = {
        SortField.NAME: lambda s: (s.key.name, s.key.namespace),
        SortField.NAMESPACE: None,  # the store's own order
        SortField.TYPE: lambda s: (s.type.value, not s.headless, s.key),
        SortField.CLUSTER_IP: _ip_sort_key,
        SortField.ENDPOINTS: endpoints,
        SortField.AGE: age,
    }
    return keys[sort]


def run_query(cache: ServiceCache, q: ServiceQuery) -> QueryResult:
    """Filter, search, sort and paginate the Services (search: name, namespace, label, IP, port, affinity)."""
    needle = q.search.strip().lower()
    terms = needle.split()
    keys = cache.ordered(q.sort.value, _sort_key(cache, q.sort), by_endpoints=q.sort is SortField.ENDPOINTS)
    if q.descending:
        keys = keys[::-1]
    if q.namespace:
        keys = [k for k in keys if k.namespace == q.namespace]
    if terms:
        text = cache.search_texts()
        for term in terms:  # every term must match: narrow term by term
            keys = [
                k for k in keys if term in text[k] or term in _extra_search_text(cache.services_of((k,))[0])
            ]
    services = cache.services_of(keys)
    if q.types:
        services = [s for s in services if _matches_type(s, q.types)]
    total = len(services)
    size = max(1, q.page_size)
    pages = max(1, -(-total // size))
    page = min(max(1, q.page), pages)
    start = (page - 1) * size
    return QueryResult(services=services[start : start + size], total=total, page=page, pages=pages)
