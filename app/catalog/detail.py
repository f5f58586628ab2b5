"""A Service's detail page (and its JSON): ports resolved per pod, endpoints with their pods, the pods
behind it, diagnostics, how to reach it, and the live object as YAML. Pure reads of the watch cache."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from app.catalog.diagnose import Diagnostic, diagnose
from app.catalog.query import ServiceRow
from app.catalog.reach import Reach, reach
from app.catalog.rule import RuleView, rule_view
from app.domain import Endpoint, EndpointSlice, ObjectKey, Pod, Service, ServicePort
from app.kube.cache import Problem, ServiceCache


@dataclass(frozen=True, slots=True)
class PodPort:
    pod: str
    port: int | None  # None: the pod has no container port of that name


@dataclass(frozen=True, slots=True)
class PortView:
    port: ServicePort
    per_pod: list[PodPort]
    ready_endpoints: int  # ready endpoints of slices that carry this port

    @property
    def named(self) -> bool:
        return isinstance(self.port.target_port, str)

    @property
    def missing(self) -> list[str]:
        return [p.pod for p in self.per_pod if p.port is None]

    @property
    def numbers(self) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for p in self.per_pod:
            if p.port is not None:
                out.setdefault(p.port, []).append(p.pod)
        return dict(sorted(out.items()))


@dataclass(frozen=True, slots=True)
class EndpointView:
    slice_name: str
    address_type: str
    endpoint: Endpoint
    pod: Pod | None  # the pod the targetRef (or the address) points at, if cached
    ports: str  # the slice's ports, e.g. "http=8080/TCP"

    @property
    def backed_by_pod(self) -> bool:
        return self.pod is not None


@dataclass(frozen=True, slots=True)
class PodView:
    pod: Pod
    via: str  # "endpoints", "selector" or "endpoints+selector"
    ready_in_slices: bool | None


@dataclass(frozen=True, slots=True)
class ServiceDetail:
    service: Service
    row: ServiceRow
    ports: list[PortView]
    slices: list[EndpointSlice]
    endpoints: list[EndpointView]
    pods: list[PodView]
    diagnostics: list[Diagnostic]
    reach: Reach
    yaml: str
    problems: list[Problem]
    rule: RuleView | None  # None: no virtual IP, so no kube-proxy rule (headless, ExternalName)


def _slice_ports(es: EndpointSlice) -> str:
    return ", ".join(
        f"{p.name or '(unnamed)'}={p.port if p.port is not None else 'all'}/{p.protocol.value}"
        for p in es.ports
    )


def _endpoint_pod(cache: ServiceCache, key: ObjectKey, ep: Endpoint) -> Pod | None:
    ref = ep.target_ref
    if ref is not None and ref.kind == "Pod":
        return cache.pod(ObjectKey(ref.namespace or key.namespace, ref.name))
    if ref is None:
        for address in ep.addresses:
            pod = cache.pod_by_ip(address)
            if pod is not None and pod.key.namespace == key.namespace:
                return pod
    return None


def _port_ready_endpoints(port: ServicePort, slices: list[EndpointSlice]) -> int:
    count = 0
    for es in slices:
        if not any(
            ((p.name or None) == port.name and p.protocol is port.protocol)
            or (p.name is None and p.port is None)
            for p in es.ports
        ):
            continue
        count += sum(1 for ep in es.endpoints if ep.conditions.effective_ready)
    return count


def service_detail(
    cache: ServiceCache, key: ObjectKey, *, cluster_domain: str = "cluster.local"
) -> ServiceDetail | None:
    svc = cache.service(key)
    if svc is None:
        return None
    slices = cache.slices_for(key)
    endpoints = [
        EndpointView(es.key.name, es.address_type, ep, _endpoint_pod(cache, key, ep), _slice_ports(es))
        for es in slices
        for ep in es.endpoints
    ]
    from_slices: dict[ObjectKey, bool] = {}
    for view in endpoints:
        if view.pod is not None:
            ready = view.endpoint.conditions.effective_ready
            from_slices[view.pod.key] = from_slices.get(view.pod.key, False) or ready
    selected = {p.key: p for p in cache.pods_matching(key.namespace, svc.selector)} if svc.selector else {}
    pods: dict[ObjectKey, PodView] = {}
    for view in endpoints:
        if view.pod is not None and view.pod.key not in pods:
            via = "endpoints+selector" if view.pod.key in selected else "endpoints"
            pods[view.pod.key] = PodView(view.pod, via, from_slices.get(view.pod.key))
    for pk, pod in selected.items():
        pods.setdefault(pk, PodView(pod, "selector", None))
    pod_views = [pods[k] for k in sorted(pods)]
    ports = [
        PortView(
            port=port,
            per_pod=[
                PodPort(pv.pod.key.name, pv.pod.resolve_port(port.target_port, port.protocol))
                for pv in pod_views
            ],
            ready_endpoints=_port_ready_endpoints(port, slices),
        )
        for port in svc.ports
    ]
    row = ServiceRow(svc, cache.endpoint_counts(key))
    return ServiceDetail(
        service=svc,
        row=row,
        ports=ports,
        slices=slices,
        endpoints=endpoints,
        pods=pod_views,
        diagnostics=diagnose(svc, row.endpoints, ports, endpoints, list(selected.values()), slices),
        reach=reach(svc, cluster_domain),
        yaml=to_yaml(cache.raw_service(key)),
        problems=[p for p in cache.problems() if p.scope in ("", key.namespace)],
        rule=rule_view(cache, svc) if svc.has_virtual_ip else None,
    )


def to_yaml(raw: Mapping[str, Any] | None) -> str:
    if raw is None:
        return "# (the object as received was not kept)"
    return yaml.safe_dump(dict(raw), sort_keys=False, default_flow_style=False, allow_unicode=True)
