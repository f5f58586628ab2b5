"""Pure parts of the devcluster run side: the route safety check, component configs, certificate names."""

from __future__ import annotations

import ipaddress
import json
import os
import tomllib
from pathlib import Path

import pytest

from devcluster import config, net, node, paths, pki

SAFE_ROUTES = [
    {"dst": "default", "dev": paths.NODE_IFACE, "scope": "link"},
    {"dst": paths.LINK_CIDR, "dev": paths.LINK_IFACE, "prefsrc": paths.NS_LINK_IP},
    {"dst": paths.POD_CIDR, "dev": paths.BRIDGE_IFACE},
    {"type": "local", "dst": "127.0.0.0/8", "dev": "lo", "table": "local"},
    {"type": "local", "dst": paths.NS_LINK_IP, "dev": paths.LINK_IFACE, "table": "local"},
    {"type": "broadcast", "dst": "198.18.255.255", "dev": paths.LINK_IFACE, "table": "local"},
]


def test_the_namespace_routes_as_built_are_safe() -> None:
    assert net.leaving_routes(SAFE_ROUTES) == []


@pytest.mark.parametrize(
    ("route", "why"),
    [
        ({"dst": "default", "dev": paths.LINK_IFACE}, "default route over the host link"),
        ({"dst": "default", "dev": paths.NODE_IFACE, "gateway": "198.18.255.2"}, "a gateway"),
        ({"dst": "10.0.0.0/8", "dev": paths.LINK_IFACE}, "more than the /30 over the host link"),
        ({"dst": "198.18.255.0/24", "dev": paths.LINK_IFACE}, "a supernet of the link"),
        ({"dst": "default", "dev": "eth0"}, "a device that is not ours"),
    ],
)
def test_routes_that_could_leave_the_machine_are_reported(route: dict[str, str], why: str) -> None:
    assert len(net.leaving_routes([*SAFE_ROUTES, route])) == 1, why


def test_every_address_is_inside_the_benchmarking_range() -> None:
    bench = ipaddress.IPv4Network("198.18.0.0/15")
    for value in (paths.POD_CIDR, paths.SERVICE_CIDR, paths.LINK_CIDR):
        assert ipaddress.IPv4Network(value).subnet_of(bench)
    for value in (
        paths.NODE_IP,
        paths.HOST_LINK_IP,
        paths.NS_LINK_IP,
        paths.DNS_SERVICE_IP,
        paths.POD_GATEWAY,
    ):
        assert ipaddress.ip_address(value) in bench
    assert ipaddress.ip_network(paths.SERVICE_CIDR).num_addresses >= 10_000


def test_kubelet_config_carries_the_settings_this_vm_needs() -> None:
    doc = json.loads(config.kubelet_config())
    assert doc["failCgroupV1"] is False
    assert doc["cgroupDriver"] == "cgroupfs"
    assert doc["cgroupRoot"] == paths.CGROUP_ROOT
    assert doc["makeIPTablesUtilChains"] is False
    assert doc["failSwapOn"] is False
    assert doc["maxPods"] == 110
    assert doc["clusterDNS"] == [paths.DNS_SERVICE_IP]


def test_kube_proxy_leaves_conntrack_sysctls_alone() -> None:
    doc = json.loads(config.kube_proxy_config())
    assert doc["mode"] == "iptables"
    assert doc["conntrack"]["maxPerCore"] == 0 and doc["conntrack"]["min"] == 0


def test_containerd_config_parses_and_restricts_oom_score_adj() -> None:
    doc = tomllib.loads(config.containerd_config())
    cri = doc["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["sandbox_image"] == config.PAUSE_IMAGE
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False


def test_cni_bridge_allocates_from_the_pod_cidr() -> None:
    bridge = json.loads(config.cni_conflist())["plugins"][0]
    assert bridge["bridge"] == paths.BRIDGE_IFACE
    assert bridge["ipam"]["ranges"] == [[{"subnet": paths.POD_CIDR, "gateway": paths.POD_GATEWAY}]]


def test_apiserver_certificate_names_every_way_it_is_reached() -> None:
    apiserver = next(i for i in pki.IDENTITIES if i.name == "apiserver")
    for ip in (paths.NS_LINK_IP, paths.APISERVER_SERVICE_IP, paths.NODE_IP):
        assert f"IP:{ip}" in apiserver.sans
    assert "DNS:kubernetes.default.svc.cluster.local" in apiserver.sans
    assert "extendedKeyUsage=serverAuth" in apiserver.extensions()


def test_kubelet_identity_is_what_the_node_authorizer_expects() -> None:
    kubelet = next(i for i in pki.IDENTITIES if i.name == "kubelet")
    assert kubelet.subject() == f"/CN=system:node:{paths.NODE_NAME}/O=system:nodes"


def test_mount_script_binds_the_state_back_over_the_var_overlay() -> None:
    lines = node.mount_script().splitlines()
    stage = str(paths.NS_STAGING_MOUNTPOINT)
    keep = lines.index(f"mount --bind {paths.STATE_DIR} {stage}/state")
    var_overlay = next(
        i for i, line in enumerate(lines) if line.startswith("mount -t overlay") and line.endswith(" /var")
    )
    back = lines.index(f"mount --bind {stage}/state {paths.STATE_DIR}")
    assert keep < var_overlay < back  # saved before /var is covered, put back on top of it afterwards
    assert lines[-1] == f"mount --bind {paths.NS_RUN_DIR} /run"
    assert all(f"upperdir={stage}/" in line for line in lines if line.startswith("mount -t overlay"))


def test_a_pid_record_tells_a_live_process_from_a_recycled_pid() -> None:
    me = os.getpid()
    stat = Path(f"/proc/{me}/stat").read_text()
    start_ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
    assert node.PidRecord("me", me, start_ticks).alive()
    assert not node.PidRecord("me", me, start_ticks + 1).alive()
