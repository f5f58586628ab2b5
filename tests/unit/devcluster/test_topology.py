"""Shapes of several nodes and instances side by side: names, addresses and configs (pure)."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import tomllib

import pytest

from devcluster import config, net, paths, pki, topology
from devcluster.topology import Shape

THREE = Shape(nodes=3, zones=2, proxy_mode="nftables")


def test_one_node_keeps_the_single_node_names_and_addresses() -> None:
    (only,) = Shape().node_list()
    assert (only.name, only.netns, only.node_ip) == (paths.NODE_NAME, paths.NETNS, paths.NODE_IP)
    assert (only.pod_cidr, only.pod_gateway) == (paths.POD_CIDR, paths.POD_GATEWAY)
    assert only.cgroup_root == paths.CGROUP_ROOT and only.state_dir == paths.STATE_DIR
    assert only.run_dir == paths.NS_RUN_DIR and only.containerd_socket == paths.CONTAINERD_SOCKET
    assert only.kubelet_root_dir == paths.KUBELET_ROOT_DIR and only.component("kubelet") == "kubelet"
    assert Shape().cluster_cidr == paths.POD_CIDR


def test_each_node_has_its_own_namespace_address_pod_cidr_state_and_cgroup() -> None:
    nodes = THREE.node_list()
    for attr in ("name", "netns", "node_ip", "pod_cidr", "state_dir", "cgroup_root", "containerd_socket"):
        values = [getattr(n, attr) for n in nodes]
        assert len(set(values)) == 3, (attr, values)
    cluster_cidr = ipaddress.ip_network(THREE.cluster_cidr)
    for n in nodes:
        assert ipaddress.ip_network(n.pod_cidr).subnet_of(cluster_cidr)  # type: ignore[arg-type]
        assert ipaddress.ip_address(n.pod_gateway) in ipaddress.ip_network(n.pod_cidr)
        # every cgroup root below the instance's: `down` walks one tree
        assert n.cgroup_root.startswith(paths.CGROUP_ROOT + "/")
    # zones round-robin, one region
    assert [n.zone for n in nodes] == ["zone-a", "zone-b", "zone-a"]
    assert {n.region for n in nodes} == {topology.REGION}


@pytest.mark.parametrize(
    ("shape", "flag"),
    [
        ({"nodes": 0}, "--nodes"),
        ({"nodes": paths.MAX_NODES + 1}, "--nodes"),
        ({"nodes": 2, "zones": 3}, "--zones"),
        ({"zones": 0}, "--zones"),
        ({"proxy_mode": "ipvs"}, "--proxy-mode"),
    ],
)
def test_impossible_shapes_are_refused_naming_the_flag(shape: dict[str, object], flag: str) -> None:
    with pytest.raises(topology.ShapeError, match=flag):
        Shape(**shape)  # type: ignore[arg-type]


def test_shape_round_trips_through_its_record() -> None:
    assert Shape.from_json(THREE.to_json()) == THREE


def test_node_configs_name_the_nodes_own_paths_labels_and_proxy_mode() -> None:
    second = THREE.node_list()[1]
    kubelet = json.loads(config.kubelet_config(second))
    assert kubelet["cgroupRoot"] == second.cgroup_root
    assert kubelet["podLogsDir"] == str(second.pod_logs_dir)
    assert kubelet["tlsCertFile"] == str(pki.crt(pki.kubelet_serving(second)))
    proxy = json.loads(config.kube_proxy_config(second, THREE))
    assert proxy["mode"] == "nftables" and proxy["hostnameOverride"] == second.name
    assert proxy["clusterCIDR"] == THREE.cluster_cidr
    containerd = tomllib.loads(config.containerd_config(second))
    assert containerd["root"] == str(second.containerd_root)
    bridge = json.loads(config.cni_conflist(second))["plugins"][0]
    assert bridge["ipam"]["ranges"] == [[{"subnet": second.pod_cidr, "gateway": second.pod_gateway}]]
    specs = config.components(paths.CACHE_DIR, THREE)
    kubelet_argv = specs[second.component("kubelet")].argv
    assert f"--node-labels={topology.ZONE_LABEL}=zone-b,{topology.REGION_LABEL}=devcluster" in kubelet_argv
    assert f"--node-ip={second.node_ip}" in kubelet_argv
    assert specs[second.component("kube-proxy")].netns_path == second.netns_path
    assert specs["kube-apiserver"].netns_path == paths.NETNS_PATH  # the control plane: beside the first node


def test_every_further_kubelet_is_its_own_node_identity_and_reaches_the_apiserver_over_the_fabric() -> None:
    idents = {i.name: i for i in pki.identities(THREE)}
    for n in THREE.node_list()[1:]:
        assert idents[pki.kubelet_identity(n)].subject() == f"/CN=system:node:{n.name}/O=system:nodes"
        assert f"IP:{n.node_ip}" in idents[pki.kubelet_serving(n)].sans
        assert pki.kubeconfigs(THREE)[pki.kubelet_kubeconfig(n)][1] == f"https://{paths.NODE_IP}:6443"


def test_routes_to_other_nodes_pod_cidrs_are_contained_but_a_gateway_elsewhere_is_not() -> None:
    second = THREE.node_list()[1]
    fabric_routes = [
        {"dst": "default", "dev": paths.NODE_IFACE, "scope": "link"},
        {"dst": f"{paths.NODE_IP.rsplit('.', 1)[0]}.0/25", "dev": paths.NODE_IFACE},
        {"dst": second.pod_cidr, "dev": paths.NODE_IFACE, "gateway": second.node_ip},
    ]
    assert net.leaving_routes(fabric_routes) == []
    outside = {"dst": "10.0.0.0/8", "dev": paths.NODE_IFACE, "gateway": second.node_ip}
    not_a_node = {"dst": second.pod_cidr, "dev": paths.NODE_IFACE, "gateway": "198.18.254.7"}
    assert len(net.leaving_routes([outside, not_a_node])) == 2


def _paths_of(instance: str) -> dict[str, str]:
    script = (
        "import json; from devcluster import paths as p; print(json.dumps({k: str(getattr(p, k)) for k in "
        "('STATE_DIR', 'LOCK_FILE', 'NETNS', 'FABRIC_NETNS', 'CGROUP_ROOT', 'HOST_IFACE', 'LINK_CIDR', "
        "'ADMIN_KUBECONFIG', 'FAILED_LOGS_DIR')}))"
    )
    env = {**os.environ, paths.INSTANCE_ENV: instance}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    values: dict[str, str] = json.loads(out.stdout)
    return values


def test_a_named_instance_shares_no_host_visible_name_with_the_default_one() -> None:
    default, other = _paths_of(""), _paths_of("mn")
    assert default["STATE_DIR"] == "/var/lib/svcscope-devcluster"  # unchanged for the default instance
    assert default["LINK_CIDR"] == "198.18.255.252/30" and default["HOST_IFACE"] == "dc-host"
    for key, value in default.items():
        assert other[key] != value, key
    assert len(other["HOST_IFACE"]) <= 15  # the kernel's limit for interface names
    link = ipaddress.ip_network(other["LINK_CIDR"])
    assert not link.overlaps(ipaddress.ip_network(default["LINK_CIDR"]))
    assert link.subnet_of(ipaddress.ip_network("198.18.0.0/15"))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["Mn", "1mn", "with-dash", "toolongname", "fabric"])
def test_bad_instance_names_are_refused_naming_the_source(name: str) -> None:
    with pytest.raises(paths.InstanceError, match="--instance"):
        paths.check_instance(name, "--instance")


def test_up_refuses_a_shape_other_than_the_running_one_naming_the_flag() -> None:
    from devcluster import cluster

    running = Shape(nodes=3, zones=2, proxy_mode="iptables")
    assert cluster._mismatch(Shape(nodes=3), running, {"nodes"}) is None  # zones not asked: kept as they are
    problem = cluster._mismatch(Shape(nodes=3, zones=2, proxy_mode="nftables"), running, {"proxy_mode"})
    assert problem is not None and problem.startswith("--proxy-mode nftables:")
    assert "down" in problem
    problem = cluster._mismatch(Shape(nodes=1), running, {"nodes"})
    assert problem is not None and problem.startswith("--nodes 1:")


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["up", "--nodes", "0"], "--nodes"),
        (["up", "--nodes", "2", "--zones", "3"], "--zones"),
        (["up", "--proxy-mode", "ipvs"], "--proxy-mode"),
        (["--instance", "Bad!", "status"], "--instance"),
    ],
)
def test_cli_errors_name_the_flag(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from devcluster import cli, cluster

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("a refused command must not reach the cluster")

    monkeypatch.setattr(cluster, "up", never)
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err


def test_exec_takes_the_node_before_the_command() -> None:
    from devcluster import cli

    parser = cli.build_parser()
    node, rest = cli.split_exec_node(["exec", "--node", "n2", "--", "ip", "--node", "x"])
    assert (node, rest) == ("n2", ["exec", "--", "ip", "--node", "x"])
    assert cli.split_exec_node(["exec", "--node=n3", "--", "true"]) == ("n3", ["exec", "--", "true"])
    assert cli.split_exec_node(["exec", "--", "ip"]) == (None, ["exec", "--", "ip"])
    assert parser.prog == "python -m devcluster"
