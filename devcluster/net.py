"""The node's network namespace: its links, its routes, and the check that nothing can leave the machine.

Layout (addresses from `paths`):

    host  dc-host 198.18.255.253/30 <--veth--> dc-link 198.18.255.254/30   (apiserver link, nothing else)
    netns dc-node 198.18.255.1/32 (default route) <--veth--> dc-sink        (both ends inside: a dead end)
    netns dc0 198.18.0.1/24 (CNI bridge, made by the bridge plugin)        pods

The in-namespace pair exists because the kernel has no dummy interfaces here: traffic from the node towards a
ClusterIP needs *some* route before kube-proxy's DNAT rewrites it, and a default route into a dead-end veth
gives it one without giving anything a way out. iptables is only touched inside the namespace (by kube-proxy).

With several nodes, dc-node's peer is not a sink but a port on a bridge in a namespace of its own (the
fabric, like the network a container engine puts kind's nodes on); every node's dc-node carries its node IP
in 198.18.255.0/25 and routes the other nodes' pod CIDRs via their node IPs:

    netns <node k>  dc-node 198.18.255.k/25 <--veth--> dc-portk (fabric netns, on bridge dc-fabric)
                    198.18.(j-1).0/24 via 198.18.255.j   for every other node j
                    dc0 198.18.(k-1).1/24 (CNI bridge)  pods
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from devcluster import paths
from devcluster.sh import CommandError, run
from devcluster.topology import Shape

# Devices whose routes cannot reach beyond this machine: loopback, the CNI bridge (its ports are pod veths),
# and the dead-end pair (or, with several nodes, the pair into the fabric, which reaches only the other
# nodes). The host link is allowed only for its own /30.
_CONTAINED_DEVICES = frozenset({"lo", paths.BRIDGE_IFACE, paths.NODE_IFACE, paths.SINK_IFACE})
_NODE_SUBNET = ipaddress.ip_network(f"{paths.NODE_IP}/{paths.NODE_SUBNET_PREFIX}", strict=False)
_BENCHMARK_RANGE = ipaddress.ip_network("198.18.0.0/15")

# Per-namespace sysctls: forwarding between the bridge and the node; br_netfilter so that a pod reaching a
# ClusterIP backed by a pod on the same bridge gets its reply un-DNATed; no IPv6 (single-stack cluster, and no
# link-local chatter on the host link).
_NETNS_SYSCTLS = {
    "net/ipv4/ip_forward": "1",
    "net/ipv6/conf/all/disable_ipv6": "1",
    "net/ipv6/conf/default/disable_ipv6": "1",
    "net/bridge/bridge-nf-call-iptables": "1",
}


class UnsafeRouteError(RuntimeError):
    """A route in the namespace could carry traffic off the machine."""


def leaving_routes(routes: Iterable[Mapping[str, Any]]) -> list[str]:
    """Routes (as printed by `ip -j route show table all`) that could carry traffic off the machine."""
    link = ipaddress.ip_network(paths.LINK_CIDR)
    bad: list[str] = []
    for route in routes:
        dev = str(route.get("dev", ""))
        dst = str(route.get("dst", ""))
        if dev in _CONTAINED_DEVICES and "gateway" not in route:
            continue
        if dev == paths.LINK_IFACE and "gateway" not in route and _inside(dst, link):
            continue
        if (
            dev == paths.NODE_IFACE
            and _is_node(str(route.get("gateway", "")))
            and _inside(dst, _BENCHMARK_RANGE)
        ):
            continue  # another node's pod CIDR, via that node's IP on the fabric
        bad.append(
            f"{dst or '?'} dev {dev or '?'}" + (f" via {route['gateway']}" if "gateway" in route else "")
        )
    return bad


def _inside(dst: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    if dst in ("", "default"):
        return False
    try:
        return ipaddress.ip_network(dst, strict=False).subnet_of(net)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return False


def _is_node(gateway: str) -> bool:
    try:
        return ipaddress.ip_address(gateway) in _NODE_SUBNET
    except ValueError:
        return False


def exists() -> bool:
    return paths.NETNS_PATH.exists()


def _make_netns(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    # `unshare --net=FILE` pins the namespace with one bind mount and nothing else (unlike `ip netns add`,
    # which also turns /run/netns into a shared mount that would outlive us).
    run(["unshare", f"--net={path}", "true"])


def host_routes_overlapping(cidr: str) -> list[str]:
    """Host routes (main and every other table) that overlap `cidr`: another instance, or a real network."""
    mine = ipaddress.ip_network(cidr)
    proc = run(["ip", "-j", "-4", "route", "show", "table", "all"])
    found = []
    for route in json.loads(proc.stdout or "[]"):
        dst = str(route.get("dst", ""))
        if dst in ("", "default") or route.get("type") in ("local", "broadcast"):
            continue
        with contextlib.suppress(ValueError):
            if ipaddress.ip_network(dst, strict=False).overlaps(mine):
                found.append(f"{dst} dev {route.get('dev', '?')}")
    return found


def setup(shape: Shape | None = None) -> None:
    """Create the namespaces and their links. Expects a clean slate (`teardown` first)."""
    shape = shape or Shape()
    clash = host_routes_overlapping(paths.LINK_CIDR)
    if clash:
        raise UnsafeRouteError(
            f"the host already routes {', '.join(clash)}, which overlaps this instance's link "
            f"{paths.LINK_CIDR} (another devcluster instance? pick another {paths.INSTANCE_ENV})"
        )
    _make_netns(paths.NETNS_PATH)
    _write_sysctls(_NETNS_SYSCTLS)
    ns = ["ip", "-n", paths.NETNS]
    run(
        [
            "ip",
            "link",
            "add",
            paths.HOST_IFACE,
            "type",
            "veth",
            "peer",
            "name",
            paths.LINK_IFACE,
            "netns",
            paths.NETNS,
        ]
    )
    _host_ipv6_off(paths.HOST_IFACE)
    run(["ip", "addr", "add", f"{paths.HOST_LINK_IP}/{paths.LINK_PREFIX}", "dev", paths.HOST_IFACE])
    run(["ip", "link", "set", paths.HOST_IFACE, "up"])
    run([*ns, "link", "set", "lo", "up"])
    run([*ns, "addr", "add", f"{paths.NS_LINK_IP}/{paths.LINK_PREFIX}", "dev", paths.LINK_IFACE])
    run([*ns, "link", "set", paths.LINK_IFACE, "up"])
    if not shape.multi:
        run([*ns, "link", "add", paths.NODE_IFACE, "type", "veth", "peer", "name", paths.SINK_IFACE])
        run([*ns, "addr", "add", f"{paths.NODE_IP}/32", "dev", paths.NODE_IFACE])
        run([*ns, "link", "set", paths.NODE_IFACE, "up"])
        run([*ns, "link", "set", paths.SINK_IFACE, "up"])
        run([*ns, "route", "add", "default", "dev", paths.NODE_IFACE])
    else:
        _setup_fabric(shape)
    check_routes(shape)


def _setup_fabric(shape: Shape) -> None:
    fabric_path = Path("/run/netns") / paths.FABRIC_NETNS
    _make_netns(fabric_path)
    # No IPv6 chatter; bridged frames do not go through the fabric's (empty) iptables.
    _write_sysctls(
        {
            "net/ipv6/conf/all/disable_ipv6": "1",
            "net/ipv6/conf/default/disable_ipv6": "1",
            "net/bridge/bridge-nf-call-iptables": "0",
        },
        fabric_path,
    )
    fab = ["ip", "-n", paths.FABRIC_NETNS]
    run([*fab, "link", "set", "lo", "up"])
    run([*fab, "link", "add", paths.FABRIC_BRIDGE, "type", "bridge"])
    run([*fab, "link", "set", paths.FABRIC_BRIDGE, "up"])
    nodes = shape.node_list()
    for node in nodes:
        if not node.first:
            _make_netns(node.netns_path)
            _write_sysctls(_NETNS_SYSCTLS, node.netns_path)
            run(["ip", "-n", node.netns, "link", "set", "lo", "up"])
        ns = ["ip", "-n", node.netns]
        run([*ns, "link", "add", paths.NODE_IFACE, "type", "veth", "peer", "name", node.fabric_port])
        run([*ns, "link", "set", node.fabric_port, "netns", paths.FABRIC_NETNS])
        run([*fab, "link", "set", node.fabric_port, "master", paths.FABRIC_BRIDGE])
        run([*fab, "link", "set", node.fabric_port, "up"])
        run([*ns, "addr", "add", f"{node.node_ip}/{paths.NODE_SUBNET_PREFIX}", "dev", paths.NODE_IFACE])
        run([*ns, "link", "set", paths.NODE_IFACE, "up"])
        run([*ns, "route", "add", "default", "dev", paths.NODE_IFACE])
        for other in nodes:
            if other is not node:
                run([*ns, "route", "add", other.pod_cidr, "via", other.node_ip, "dev", paths.NODE_IFACE])


def _write_sysctls(values: Mapping[str, str], netns_path: Path = paths.NETNS_PATH) -> None:
    # One shell inside the namespace: /proc/sys/net shows the values of the namespace of the writer.
    script = "; ".join(f"echo {value} > /proc/sys/{key}" for key, value in values.items())
    proc = run(["nsenter", f"--net={netns_path}", "--", "sh", "-c", script], check=False)
    if proc.returncode != 0 and "bridge-nf-call" not in proc.stderr:
        raise CommandError(f"setting sysctls in netns {netns_path.name}: {proc.stderr.strip()}")


def _host_ipv6_off(iface: str) -> None:
    knob = Path("/proc/sys/net/ipv6/conf") / iface / "disable_ipv6"
    if knob.exists():
        knob.write_text("1\n")


def routes(netns: str = paths.NETNS) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for family in ("-4", "-6"):
        proc = run(["ip", "-n", netns, "-j", family, "route", "show", "table", "all"])
        out.extend(json.loads(proc.stdout or "[]"))
    return out


def all_leaving_routes(shape: Shape | None = None) -> list[str]:
    """leaving_routes() of every namespace of the cluster (each node's and the fabric's), named by netns."""
    shape = shape or Shape()
    spaces = [node.netns for node in shape.node_list()] + ([paths.FABRIC_NETNS] if shape.multi else [])
    return [f"netns {ns}: {bad}" for ns in spaces for bad in leaving_routes(routes(ns))]


def check_routes(shape: Shape | None = None) -> None:
    """Refuse (raise) if any route in the cluster's namespaces could carry traffic off the machine."""
    bad = all_leaving_routes(shape)
    if bad:
        raise UnsafeRouteError("routes that could leave the machine: " + "; ".join(bad))


def teardown(netns_paths: Iterable[Path] = (paths.NETNS_PATH,)) -> None:
    """Remove the host end of the link and the namespace pins. Each namespace itself (and with it its links,
    bridges and every rule kube-proxy made) disappears once no process is left in it."""
    if Path("/sys/class/net", paths.HOST_IFACE).exists():
        run(["ip", "link", "del", paths.HOST_IFACE])
    for pin in netns_paths:
        if pin.exists():
            run(["umount", str(pin)], check=False)
            pin.unlink()
