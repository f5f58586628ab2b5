"""The node's network namespace: its links, its routes, and the check that nothing can leave the machine.

Layout (addresses from `paths`):

    host  dc-host 198.18.255.253/30 <--veth--> dc-link 198.18.255.254/30   (apiserver link, nothing else)
    netns dc-node 198.18.255.1/32 (default route) <--veth--> dc-sink        (both ends inside: a dead end)
    netns dc0 198.18.0.1/24 (CNI bridge, made by the bridge plugin)        pods

The in-namespace pair exists because the kernel has no dummy interfaces here: traffic from the node towards a
ClusterIP needs *some* route before kube-proxy's DNAT rewrites it, and a default route into a dead-end veth
gives it one without giving anything a way out. iptables is only touched inside the namespace (by kube-proxy).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from devcluster import paths
from devcluster.sh import CommandError, in_netns, run

# Devices whose routes cannot reach beyond this machine: loopback, the CNI bridge (its ports are pod veths),
# and the dead-end pair. The host link is allowed only for its own /30.
_CONTAINED_DEVICES = frozenset({"lo", paths.BRIDGE_IFACE, paths.NODE_IFACE, paths.SINK_IFACE})

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


def exists() -> bool:
    return paths.NETNS_PATH.exists()


def setup() -> None:
    """Create the namespace and its links. Expects a clean slate (`teardown` first)."""
    paths.NETNS_PATH.parent.mkdir(parents=True, exist_ok=True)
    paths.NETNS_PATH.touch()
    # `unshare --net=FILE` pins the namespace with one bind mount and nothing else (unlike `ip netns add`,
    # which also turns /run/netns into a shared mount that would outlive us).
    run(["unshare", f"--net={paths.NETNS_PATH}", "true"])
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
    run([*ns, "link", "add", paths.NODE_IFACE, "type", "veth", "peer", "name", paths.SINK_IFACE])
    run([*ns, "addr", "add", f"{paths.NODE_IP}/32", "dev", paths.NODE_IFACE])
    run([*ns, "link", "set", paths.NODE_IFACE, "up"])
    run([*ns, "link", "set", paths.SINK_IFACE, "up"])
    run([*ns, "route", "add", "default", "dev", paths.NODE_IFACE])
    check_routes()


def _write_sysctls(values: Mapping[str, str]) -> None:
    # One shell inside the namespace: /proc/sys/net shows the values of the namespace of the writer.
    script = "; ".join(f"echo {value} > /proc/sys/{key}" for key, value in values.items())
    proc = run(in_netns(["sh", "-c", script]), check=False)
    if proc.returncode != 0 and "bridge-nf-call" not in proc.stderr:
        raise CommandError(f"setting sysctls in netns {paths.NETNS}: {proc.stderr.strip()}")


def _host_ipv6_off(iface: str) -> None:
    knob = Path("/proc/sys/net/ipv6/conf") / iface / "disable_ipv6"
    if knob.exists():
        knob.write_text("1\n")


def routes() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for family in ("-4", "-6"):
        proc = run(["ip", "-n", paths.NETNS, "-j", family, "route", "show", "table", "all"])
        out.extend(json.loads(proc.stdout or "[]"))
    return out


def check_routes() -> None:
    """Refuse (raise) if any route in the namespace could carry traffic off the machine."""
    bad = leaving_routes(routes())
    if bad:
        raise UnsafeRouteError(
            f"netns {paths.NETNS} has routes that could leave the machine: " + "; ".join(bad)
        )


def teardown() -> None:
    """Remove the host end of the link and the namespace pin. The namespace itself (and with it the in-netns
    links, the bridge and every iptables rule kube-proxy made) disappears once no process is left in it."""
    if Path("/sys/class/net", paths.HOST_IFACE).exists():
        run(["ip", "link", "del", paths.HOST_IFACE])
    if paths.NETNS_PATH.exists():
        run(["umount", str(paths.NETNS_PATH)], check=False)
        paths.NETNS_PATH.unlink()
