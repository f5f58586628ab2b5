"""Which ``ip:port`` may be probed: only what the watch cache knows (pure, no I/O).

The user names a Service and one of its ports, never an address. The ClusterIP comes from the
watched Service; direct (per-pod) probes go only to watched endpoint addresses whose targetRef is
a watched Pod. Whatever the cache says, some addresses are never probed: loopback, link-local,
unspecified, multicast, cloud metadata addresses and the apiserver (``default/kubernetes``).
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from app.domain import EndpointSlice, ObjectKey, Pod, Service, ServiceKey, ServicePort, ServiceType
from app.domain import Protocol as L4

APISERVER_SERVICE = ObjectKey("default", "kubernetes")
# Cloud metadata / host agent addresses (AWS/GCP/Azure/OpenStack, AWS IPv6, Alibaba, Azure wireserver).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "168.63.129.16")
)


class ClusterView(Protocol):
    """The read-only slice of the watch cache that probes need (``app.kube.cache`` satisfies it)."""

    def service(self, key: ServiceKey) -> Service | None: ...

    def slices_for(self, key: ServiceKey) -> Sequence[EndpointSlice]: ...

    def pod(self, key: ObjectKey) -> Pod | None: ...


class ProbeProtocol(enum.StrEnum):
    HTTP = "HTTP"
    TCP = "TCP"
    UDP = "UDP"

    @property
    def transport(self) -> L4:
        return L4.UDP if self is ProbeProtocol.UDP else L4.TCP


class TargetError(Exception):
    """A probe target refused, with the reason in plain words (``app.web.errors`` maps it to HTTP)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownService(TargetError):
    """The Service is not among the watched ones."""


class UnknownPort(TargetError):
    pass


class NotProbeable(TargetError):
    pass


class ForbiddenAddress(TargetError):
    """An address svcscope never probes (loopback, metadata, the apiserver ...)."""


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """A watched Service's virtual IP and one of its ports."""

    service: ServiceKey
    address: str
    port: ServicePort
    protocol: ProbeProtocol
    session_affinity: str
    affinity_timeout_s: int | None
    identity_annotation: str | None

    @property
    def label(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port.port}"


@dataclass(frozen=True, slots=True)
class Backend:
    """One endpoint address behind the Service port, with the pod it belongs to (if a watched Pod)."""

    pod: str | None  # pod name (namespace = the Service's), None when the targetRef is not a watched Pod
    ip: str
    port: int | None  # the resolved targetPort for this endpoint (from the slice), None if unknown
    node: str | None
    ready: bool
    serving: bool
    terminating: bool

    @property
    def directly_probeable(self) -> bool:
        return self.pod is not None and self.port is not None


IDENTITY_ANNOTATION = "svcscope.io/pod-identity"


@functools.lru_cache(maxsize=4096)
def forbidden_reason(address: str) -> str | None:
    """Why an address is never probed, or None if it may be (subject to being watched)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address"
    if ip.is_loopback:
        return f"{ip} is a loopback address"
    if ip.is_link_local:
        return f"{ip} is link-local"
    if ip.is_unspecified:
        return f"{ip} is the unspecified address"
    if ip.is_multicast:
        return f"{ip} is multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip == ipaddress.IPv4Address("255.255.255.255"):
        return f"{ip} is broadcast"
    return None


def apiserver_addresses(view: ClusterView) -> frozenset[str]:
    """The apiserver's Service IPs and its endpoint addresses (never probed)."""
    found: set[str] = set()
    svc = view.service(APISERVER_SERVICE)
    if svc is not None:
        found.update(ip for ip in (svc.cluster_ip, *svc.cluster_ips) if ip and ip != "None")
    for sl in view.slices_for(APISERVER_SERVICE):
        for ep in sl.endpoints:
            found.update(ep.addresses)
    return frozenset(_normal(a) for a in found)


@functools.lru_cache(maxsize=4096)
def _normal(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


def _check_address(view: ClusterView, address: str) -> None:
    if reason := forbidden_reason(address):
        raise ForbiddenAddress(f"refusing to probe {address}: {reason}")
    if _normal(address) in apiserver_addresses(view):
        raise ForbiddenAddress(f"refusing to probe {address}: it is the Kubernetes apiserver")


def find_port(service: Service, port: str | int, protocol: ProbeProtocol) -> ServicePort:
    """A Service port by name or number; a number must match the protocol's transport (TCP/UDP)."""
    text = str(port).strip()
    if not text:
        raise UnknownPort("port is empty: give a port name or number")
    wanted = protocol.transport
    listed = ", ".join(p.label for p in service.ports) or "none"
    if text.isdigit():
        number = int(text)
        same_number = [p for p in service.ports if p.port == number]
        if not same_number:
            raise UnknownPort(f"Service {service.key} has no port {number} (ports: {listed})")
        matching = [p for p in same_number if p.protocol is wanted]
    else:
        named = [p for p in service.ports if p.name == text]
        if not named:
            raise UnknownPort(f"Service {service.key} has no port named {text!r} (ports: {listed})")
        matching = [p for p in named if p.protocol is wanted]
        same_number = named
    if not matching:
        have = "/".join(sorted({p.protocol.value for p in same_number}))
        raise UnknownPort(
            f"port {text} of {service.key} is {have}, so it cannot be probed with {protocol.value}"
            + (" (use UDP)" if have == "UDP" else " (use HTTP or TCP)" if have == "TCP" else "")
        )
    return matching[0]


def resolve(view: ClusterView, key: ServiceKey, port: str | int, protocol: ProbeProtocol) -> ProbeTarget:
    """The ClusterIP:port to probe, or a TargetError saying why not."""
    if key == APISERVER_SERVICE:
        raise ForbiddenAddress("refusing to probe default/kubernetes: it is the Kubernetes apiserver")
    service = view.service(key)
    if service is None:
        raise UnknownService(f"Service {key} is not known (not watched, or does not exist)")
    if service.type is ServiceType.EXTERNAL_NAME:
        raise NotProbeable(
            f"{key} is an ExternalName Service: it is only a DNS CNAME to {service.external_name!r}, "
            "kube-proxy does not route it and svcscope never probes addresses outside the cluster"
        )
    if service.headless:
        raise NotProbeable(
            f"{key} is headless (clusterIP: None): there is no virtual IP and no kube-proxy balancing — "
            "its DNS name returns the pod IPs and the client picks one"
        )
    if not service.has_virtual_ip or not service.cluster_ip:
        raise NotProbeable(f"{key} has no ClusterIP yet")
    service_port = find_port(service, port, protocol)
    _check_address(view, service.cluster_ip)
    target = ProbeTarget(
        service=key,
        address=service.cluster_ip,
        port=service_port,
        protocol=protocol,
        session_affinity=service.session_affinity,
        affinity_timeout_s=service.affinity_timeout_s,
        identity_annotation=service.annotations.get(IDENTITY_ANNOTATION),
    )
    if reason := forbidden_endpoint(view, target):
        raise ForbiddenAddress(reason)
    return target


def forbidden_endpoint(view: ClusterView, target: ProbeTarget) -> str | None:
    """Why the ClusterIP must not be probed because of where kube-proxy would send it, or None.

    A selector-less Service with hand-written endpoints could route the ClusterIP to the apiserver
    or a metadata address: the ClusterIP then is only a detour to a refused address.
    """
    forbidden = apiserver_addresses(view)
    for sl in view.slices_for(target.service):
        for ep in sl.endpoints:
            for address in ep.addresses:
                prefix = f"refusing to probe {target.service}: its endpoint"
                if _normal(address) in forbidden:
                    return f"{prefix} {address} is the Kubernetes apiserver"
                if reason := forbidden_reason(address):
                    return f"{prefix} {reason}"
    return None


def backends(view: ClusterView, target: ProbeTarget) -> tuple[Backend, ...]:
    """Current endpoint addresses for the target's port (from the watched EndpointSlices)."""
    wanted_name = target.port.name or ""
    seen: set[str] = set()
    out: list[Backend] = []
    forbidden = apiserver_addresses(view)
    for sl in view.slices_for(target.service):
        slice_port = next(
            (
                p.port
                for p in sl.ports
                if (p.name or "") == wanted_name and p.protocol is target.port.protocol
            ),
            None,
        )
        for ep in sl.endpoints:
            pod_name: str | None = None
            pod: Pod | None = None
            ref = ep.target_ref
            if ref is not None and ref.kind == "Pod":
                pod = view.pod(ObjectKey(ref.namespace or target.service.namespace, ref.name))
                pod_name = pod.key.name if pod is not None else None
            for address in ep.addresses:
                norm = _normal(address)
                if norm in seen:
                    continue
                seen.add(norm)
                port = slice_port
                if port is None and pod is not None:
                    port = pod.resolve_port(target.port.target_port, target.port.protocol)
                owned = pod is not None and (norm in {_normal(i) for i in (pod.pod_ip, *pod.pod_ips) if i})
                safe = forbidden_reason(norm) is None and norm not in forbidden
                out.append(
                    Backend(
                        pod=pod_name if owned else None,
                        ip=norm,
                        port=port if (owned and safe) else None,
                        node=ep.node_name or (pod.node_name if pod is not None else None),
                        ready=ep.conditions.effective_ready,
                        serving=ep.conditions.effective_serving,
                        terminating=ep.conditions.effective_terminating,
                    )
                )
    out.sort(key=lambda b: (b.pod or "~", b.ip))
    return tuple(out)


def direct_target(view: ClusterView, target: ProbeTarget, ip: str) -> tuple[str, int]:
    """A watched endpoint address of the target backed by a watched Pod, as ``(ip, port)`` to dial."""
    _check_address(view, ip)
    norm = _normal(ip)
    for b in backends(view, target):
        if b.ip == norm:
            if b.pod is None:
                raise ForbiddenAddress(f"{ip} is an endpoint of {target.service} but not a watched Pod")
            if b.port is None:
                raise NotProbeable(f"the target port of {target.service} is not resolved for pod {b.pod}")
            return b.ip, b.port
    raise ForbiddenAddress(f"{ip} is not a current endpoint of {target.service}")
