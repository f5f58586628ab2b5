"""View models built from the cache (pure): list rows and the Service detail.

HTML templates and the JSON API both render these, so they always say the same thing.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yaml

from app.domain import Endpoint, EndpointSlice, ObjectKey, Pod, Protocol, Service, ServicePort, ServiceType
from app.kube.cache import EndpointCounts, Problem, QueryResult, ServiceCache, ServiceQuery


class Level(enum.StrEnum):
    OK = "ok"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    level: Level
    text: str


@dataclass(frozen=True, slots=True)
class ServiceRow:
    service: Service
    endpoints: EndpointCounts

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
class Reach:
    dns_names: list[str]
    commands: list[str]
    ping_note: str


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


def human_age(created: datetime | None, now: datetime | None = None) -> str:
    if created is None:
        return "?"
    now = now or datetime.now(UTC)
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    seconds = max(0, int((now - created).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * 2 or (unit == "m" and seconds >= 60):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def service_list(cache: ServiceCache, query: ServiceQuery) -> ServiceList:
    result: QueryResult = cache.query(query)
    rows = [ServiceRow(svc, cache.endpoint_counts(svc.key)) for svc in result.services]
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
    )


def to_yaml(raw: Mapping[str, Any] | None) -> str:
    if raw is None:
        return "# (the object as received was not kept)"
    return yaml.safe_dump(dict(raw), sort_keys=False, default_flow_style=False, allow_unicode=True)


def _names(pods: list[str], limit: int = 5) -> str:
    shown = ", ".join(pods[:limit])
    return shown + (f" and {len(pods) - limit} more" if len(pods) > limit else "")


def diagnose(
    svc: Service,
    counts: EndpointCounts,
    ports: list[PortView],
    endpoints: list[EndpointView],
    selected: list[Pod],
    slices: list[EndpointSlice],
) -> list[Diagnostic]:
    """What is wrong (or worth knowing) about a Service, in plain words."""
    out: list[Diagnostic] = []
    add = out.append
    if svc.type is ServiceType.EXTERNAL_NAME:
        add(
            Diagnostic(
                Level.INFO,
                f"ExternalName Service: cluster DNS answers its name with a CNAME to {svc.external_name!r}. "
                "There is no ClusterIP, no endpoints and no proxying by kube-proxy.",
            )
        )
        return out
    if svc.headless:
        add(
            Diagnostic(
                Level.INFO,
                "Headless Service (clusterIP: None): there is no virtual IP and kube-proxy does not balance; "
                "DNS returns the ready endpoints' addresses directly and the client picks one.",
            )
        )
    if svc.selector is None:
        if not slices:
            add(
                Diagnostic(
                    Level.ERROR,
                    "No selector and no EndpointSlices: nothing receives traffic sent to this Service. "
                    "Create EndpointSlices labelled kubernetes.io/service-name=" + svc.key.name + " by hand.",
                )
            )
        else:
            add(
                Diagnostic(
                    Level.INFO, "No selector: its endpoints are managed by hand (or by another controller)."
                )
            )
    else:
        sel = ",".join(f"{k}={v}" for k, v in sorted(svc.selector.items()))
        ready_pods = [p for p in selected if p.ready and not p.deleting]
        if not selected:
            add(
                Diagnostic(
                    Level.ERROR,
                    f"The selector {sel} matches no pods in namespace {svc.key.namespace}: "
                    "check the pod labels (kubectl get pods --show-labels).",
                )
            )
        elif not ready_pods:
            add(
                Diagnostic(
                    Level.ERROR,
                    f"{len(selected)} pod(s) match the selector {sel} but none is Ready: "
                    "no endpoint is ready, so connections fail.",
                )
            )
        elif len(ready_pods) < len(selected):
            not_ready = [p.key.name for p in selected if p not in ready_pods]
            add(
                Diagnostic(
                    Level.WARNING,
                    f"{len(not_ready)} of {len(selected)} matching pods are not Ready and get no traffic: "
                    f"{_names(not_ready)}.",
                )
            )
    if counts.total == 0:
        add(
            Diagnostic(
                Level.ERROR,
                "No endpoints: no EndpointSlice lists an address for this Service, so a connection to "
                "its ClusterIP is refused or times out.",
            )
        )
    elif counts.ready == 0:
        add(
            Diagnostic(
                Level.ERROR, f"None of the {counts.total} endpoint(s) is ready: traffic has nowhere to go."
            )
        )
    for pv in ports:
        target = pv.port.target_port
        if pv.named and pv.missing:
            add(
                Diagnostic(
                    Level.WARNING,
                    f"Port {pv.port.label}: pod(s) {_names(pv.missing)} have no container port named "
                    f"{target!r} ({pv.port.protocol.value}); they get no traffic on this port.",
                )
            )
        if pv.named and len(pv.numbers) > 1:
            mapping = "; ".join(f"{num} on {_names(pods, 3)}" for num, pods in pv.numbers.items())
            add(
                Diagnostic(
                    Level.INFO,
                    f"Named targetPort {target!r} resolves to different numbers per pod ({mapping}). "
                    "That is allowed: each pod is reached on its own number.",
                )
            )
        if counts.total > 0 and pv.ready_endpoints == 0:
            add(
                Diagnostic(
                    Level.WARNING,
                    f"Port {pv.port.label} has no ready endpoint: no EndpointSlice carries this port "
                    "with a ready address.",
                )
            )
    unbacked = [e for e in endpoints if not e.backed_by_pod]
    if unbacked:
        level = Level.INFO if svc.selector is None else Level.WARNING
        addresses = [", ".join(e.endpoint.addresses) for e in unbacked]
        add(
            Diagnostic(
                level,
                f"{len(unbacked)} endpoint(s) are not backed by a known pod: {_names(addresses)}"
                + (" (normal for a Service without selector)." if svc.selector is None else "."),
            )
        )
    terminating = [e for e in endpoints if e.endpoint.conditions.effective_terminating]
    if terminating:
        add(Diagnostic(Level.INFO, f"{len(terminating)} endpoint(s) are terminating (shutting down)."))
    if svc.session_affinity == "ClientIP":
        add(
            Diagnostic(
                Level.INFO,
                f"Session affinity ClientIP: one client IP keeps reaching the same pod for "
                f"{svc.affinity_timeout_s} s after its last connection.",
            )
        )
    if svc.internal_traffic_policy == "Local":
        add(
            Diagnostic(
                Level.INFO,
                "internalTrafficPolicy: Local — a client only reaches endpoints on its own node; "
                "clients on nodes without one get no answer.",
            )
        )
    if not any(d.level in (Level.ERROR, Level.WARNING) for d in out):
        add(Diagnostic(Level.OK, f"{counts.ready} ready endpoint(s) of {counts.total} behind this Service."))
    return out


PING_NOTE = (
    "ping does not answer on a ClusterIP, and that is normal: the ClusterIP is a virtual address that "
    "exists only as kube-proxy rules (iptables/nftables/IPVS) translating connections to the Service's "
    "ports into pod addresses. No interface owns it, and ICMP echo is not one of the Service's ports. "
    "Test a port instead (curl, nc)."
)


def reach(svc: Service, cluster_domain: str = "cluster.local") -> Reach:
    name, ns = svc.key.name, svc.key.namespace
    dns = [name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.{cluster_domain}"]
    commands: list[str] = []
    exec_prefix = f"kubectl exec -n {ns} <client-pod> -- "
    if svc.type is ServiceType.EXTERNAL_NAME:
        commands.append(exec_prefix + f"nslookup {name}.{ns}.svc.{cluster_domain}")
    for port in svc.ports:
        host = svc.cluster_ip if svc.has_virtual_ip else f"{name}.{ns}.svc.{cluster_domain}"
        if port.protocol is Protocol.TCP:
            commands.append(exec_prefix + f"curl -s http://{host}:{port.port}/")
            if svc.has_virtual_ip:
                commands.append(exec_prefix + f"curl -s http://{name}.{ns}:{port.port}/")
        elif port.protocol is Protocol.UDP:
            commands.append(exec_prefix + f"sh -c 'echo ping | nc -u -w1 {host} {port.port}'")
    note = (
        PING_NOTE
        if svc.has_virtual_ip
        else (
            "A headless Service has no virtual IP: DNS returns pod IPs, and those are real addresses."
            if svc.headless
            else "An ExternalName Service has no IP of its own at all."
        )
    )
    return Reach(dns_names=dns, commands=commands, ping_note=note)
