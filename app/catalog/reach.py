"""How to reach a Service from inside the cluster: its DNS names, commands to try, and why ping fails."""

from __future__ import annotations

from dataclasses import dataclass

from app.domain import Protocol, Service, ServiceType


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
