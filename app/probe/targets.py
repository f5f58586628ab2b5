"""Which ``ip:port`` may be probed: only what the watch cache knows (pure, no I/O).

The user names a Service and one of its ports, never an address. The ClusterIP comes from the
watched Service; direct (per-pod) probes go only to watched endpoint addresses whose targetRef is
a watched Pod. Whatever the cache says, some addresses are never probed: loopback, link-local,
unspecified, multicast, cloud metadata addresses and the apiserver (``default/kubernetes``). Nor,
unless the endpoint is a watched Pod of the Service's own namespace with exactly that address: a node's
address (the Nodes' own and the pods' hostIPs) or its neighbours in the same /24, a node's pod-network
gateway, or the kubelet port. A node's kubelet port is refused even then: on a node address it is the
kubelet, whatever the endpoint claims.

Long on purpose: every rule about which address may receive a probe lives here, so one file is the
whole answer to "can svcscope be made to send traffic somewhere else?".
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from app.domain import EndpointSlice, ObjectKey, Pod, Service, ServiceKey, ServicePort, ServiceType, TargetRef
from app.domain import Protocol as L4

APISERVER_SERVICE = ObjectKey("default", "kubernetes")
KUBELET_PORT = 10250
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

    def host_addresses(self) -> frozenset[str]: ...

    def gateway_addresses(self) -> frozenset[str]: ...


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


def own_pod(view: ClusterView, namespace: str, ref: TargetRef | None) -> Pod | None:
    """The watched Pod an endpoint's targetRef names, if it lives in the Service's own namespace.

    A hand-written EndpointSlice may name a pod of any namespace (the API does not check): such a pod is
    never shown as the Service's, nor does its address become probe-able through it."""
    if ref is None or ref.kind != "Pod" or (ref.namespace or namespace) != namespace:
        return None
    return view.pod(ObjectKey(namespace, ref.name))


def _pod_addresses(pod: Pod | None) -> frozenset[str]:
    if pod is None:
        return frozenset()
    return frozenset(_normal(i) for i in (pod.pod_ip, *pod.pod_ips) if i)


def endpoint_refusal(
    view: ClusterView, address: str, port: int | None, owner: Pod | None, apiserver: frozenset[str]
) -> str | None:
    """Why traffic must not go to the endpoint ``address:port`` (``owner``: its own watched Pod), or None."""
    norm = _normal(address)
    if reason := forbidden_reason(norm):
        return reason
    hosts = view.host_addresses()
    if norm in hosts and port == KUBELET_PORT:
        return f"{norm}:{port} is a node's kubelet"
    if norm in apiserver:
        return f"{norm} is the Kubernetes apiserver"
    if norm in _pod_addresses(owner):
        return None
    if norm in hosts:
        return f"{norm} is a node's address, not a pod of this Service"
    if norm in view.gateway_addresses():
        return f"{norm} is a node's pod-network gateway, not a pod of this Service"
    if host := _node_network(norm, hosts):
        return f"{norm} is in the nodes' own network (next to node {host}), not a pod of this Service"
    if port == KUBELET_PORT:
        return f"port {port} is the kubelet's and {norm} is not a pod of this Service"
    return None


@functools.lru_cache(maxsize=4096)
def _network(address: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The /24 (IPv4) or /64 (IPv6) around an address: where a node's neighbours (its links, the host, the
    apiserver's other addresses) live."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 64}", strict=False)


def _node_network(address: str, hosts: frozenset[str]) -> str | None:
    """A node address whose network holds ``address`` (hand-made endpoints to a node's neighbours)."""
    net = _network(address)
    return next((h for h in sorted(hosts) if net is not None and _network(h) == net), None)


def _slice_port(sl: EndpointSlice, target: ProbeTarget) -> int | None:
    wanted_name = target.port.name or ""
    return next(
        (p.port for p in sl.ports if (p.name or "") == wanted_name and p.protocol is target.port.protocol),
        None,
    )


def forbidden_endpoint(view: ClusterView, target: ProbeTarget) -> str | None:
    """Why the ClusterIP must not be probed because of where kube-proxy would send it, or None.

    A selector-less Service with hand-written endpoints could route the ClusterIP to the apiserver, a
    node or a metadata address: the ClusterIP then is only a detour to a refused address."""
    apiserver = apiserver_addresses(view)
    namespace = target.service.namespace
    for sl in view.slices_for(target.service):
        port = _slice_port(sl, target)
        for ep in sl.endpoints:
            owner = own_pod(view, namespace, ep.target_ref)
            for address in ep.addresses:
                if reason := endpoint_refusal(view, address, port, owner, apiserver):
                    where = f"{address}:{port}" if port is not None else address
                    return f"refusing to probe {target.service}: its endpoint {where} — {reason}"
    return None


def backends(view: ClusterView, target: ProbeTarget) -> tuple[Backend, ...]:
    """Current endpoint addresses for the target's port (from the watched EndpointSlices)."""
    seen: set[str] = set()
    out: list[Backend] = []
    apiserver = apiserver_addresses(view)
    namespace = target.service.namespace
    for sl in view.slices_for(target.service):
        slice_port = _slice_port(sl, target)
        for ep in sl.endpoints:
            pod = own_pod(view, namespace, ep.target_ref)
            owned_ips = _pod_addresses(pod)
            for address in ep.addresses:
                norm = _normal(address)
                if norm in seen:
                    continue
                seen.add(norm)
                port = slice_port
                if port is None and pod is not None:
                    port = pod.resolve_port(target.port.target_port, target.port.protocol)
                owned = norm in owned_ips
                safe = endpoint_refusal(view, norm, port, pod if owned else None, apiserver) is None
                out.append(
                    Backend(
                        pod=pod.key.name if (owned and pod is not None) else None,
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
