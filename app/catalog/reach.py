"""How to reach a Service from inside the cluster: its DNS names, commands to try, and why ping fails."""

from __future__ import annotations

from dataclasses import dataclass

from app.domain import Protocol, Service, ServicePort, ServiceType


@dataclass(frozen=True, slots=True)
class Reach:
    dns_names: list[str]
    commands: list[str]
    ping_note: str


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


# appProtocol values (IANA service names or Kubernetes' own) whose payload is HTTP/1.x.
HTTP_APP_PROTOCOLS = frozenset(
    {"http", "https", "h2c", "kubernetes.io/h2c", "kubernetes.io/ws", "kubernetes.io/wss"}
)


def probe_protocol(port: ServicePort) -> str:
    """What a probe of this port should speak: ``HTTP``, ``TCP`` or ``UDP``.

    A UDP port can only be probed with UDP. A TCP port speaks HTTP when its ``appProtocol`` says so
    (any other appProtocol means something else, so raw TCP), or, without one, when its name says
    ``http…`` (the Kubernetes naming convention, e.g. ``http``, ``http-metrics``); otherwise raw TCP,
    which reads a banner or an echo and works whatever the server speaks.
    """
    if port.protocol is Protocol.UDP:
        return "UDP"
    if port.protocol is not Protocol.TCP:
        return "TCP"
    if port.app_protocol:
        return "HTTP" if port.app_protocol.lower() in HTTP_APP_PROTOCOLS else "TCP"
    name = (port.name or "").lower()
    return "HTTP" if name.startswith(("http", "web")) or (not name and port.port in (80, 8080)) else "TCP"
