"""`devcluster stop|start|restart`: the command line, and finding who listens on a port (pure parts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devcluster import cli, cluster, components, topology

# /proc/net/tcp as the kernel writes it: a LISTEN socket (state 0A) on 0.0.0.0:6443 (0x192B), one on
# 127.0.0.1:2379 (0x094B), an established connection from port 2379 and a LISTEN on an unrelated port.
TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:192B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 41001 1 0 100 0 0 10 0
   1: 0100007F:094B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 41002 1 0 100 0 0 10 0
   2: 0100007F:094B 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 41003 1 0 20 4 30 10 -1
   3: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 41004 1 0 100 0 0 10 0
"""  # noqa: E501
# /proc/net/tcp6: the apiserver listening on [::]:6443.
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:192B 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 52001 1 0 100 0 0 10 0
"""  # noqa: E501


def test_listening_sockets_on_the_ports_asked_for() -> None:
    assert components.listening_inodes(TCP, {6443, 2379}) == {41001: 6443, 41002: 2379}
    assert components.listening_inodes(TCP, {2380}) == {}  # nobody listens there
    assert components.listening_inodes(TCP6, {6443}) == {52001: 6443}
    assert components.listening_inodes("header only\n", {6443}) == {}


def test_every_component_with_ports_and_a_health_check() -> None:
    assert set(components.NAMES) == {*components.PORTS, "coredns"}
    for name in components.NAMES:
        assert name in components.HEALTH_URLS or name in ("kube-apiserver", "containerd", "coredns")
    # /proc/PID/comm keeps 15 bytes: a stray controller-manager shows as "kube-controller".
    assert components.program("kube-controller-manager") == "kube-controller"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["stop", "etcd"], ("stop", "etcd", None, False, False)),
        (["stop", "kube-apiserver", "--kill"], ("stop", "kube-apiserver", None, True, False)),
        (["stop", "kube-proxy", "--freeze", "--node", "n2"], ("stop", "kube-proxy", "n2", False, True)),
        (["restart", "kubelet", "--kill"], ("restart", "kubelet", None, True, False)),
    ],
)
def test_stop_and_restart_arguments(argv: list[str], expected: tuple[object, ...]) -> None:
    args = cli.build_parser().parse_args(argv)
    assert (args.command, args.component, args.node, args.kill, getattr(args, "freeze", False)) == expected


def test_start_takes_several_components() -> None:
    args = cli.build_parser().parse_args(["start", "etcd", "coredns", "--no-wait"])
    assert (args.component, args.no_wait) == (["etcd", "coredns"], True)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["stop", "apiserver"], "invalid choice: 'apiserver'"),
        (["stop", "etcd", "--kill", "--freeze"], "not allowed with argument"),
        (["start"], "the following arguments are required: COMPONENT"),
    ],
)
def test_bad_arguments_are_named(argv: list[str], said: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(argv)
    assert said in capsys.readouterr().err


def test_a_cluster_that_is_not_up_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(topology.Node, "netns_path", property(lambda self: tmp_path / "no-such-netns"))
    with pytest.raises(cluster.ClusterError, match=r"node .* is not up: run `python -m devcluster up`"):
        components.resolve("etcd")


def test_an_unknown_node_names_the_flag() -> None:
    with pytest.raises(cluster.ClusterError, match="--node 'nowhere': no such node"):
        components.resolve("kubelet", "nowhere")
    with pytest.raises(cluster.ClusterError, match="'etcdx': give one of etcd, containerd"):
        components.resolve("etcdx")
