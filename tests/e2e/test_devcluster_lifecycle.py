"""`up` twice is a no-op; `down` leaves nothing behind; `up` after `down` works.

conftest.py orders this module after every other e2e test: it takes the shared node down.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from devcluster import node, paths
from tests.e2e.conftest import Cluster, devcluster

pytestmark = pytest.mark.e2e


def _pids_file_contents() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(paths.PID_DIR.glob("*.pid"))}


def _node_processes(bin_dir: Path) -> list[str]:
    """Live processes that belong to a node: its binaries, etcd/containerd on its state, containerd's shims.

    Clients of other tests (kubectl, helm, buildah) may mention the same paths and are not the node's."""
    needles = (
        *(f"{bin_dir}/{name} " for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")),
        *(f"{bin_dir}/{name} " for name in ("kubelet", "kube-proxy")),
        "/coredns ",
        f"--data-dir {paths.ETCD_DATA_DIR}",
        f"--config {paths.CONFIG_DIR}/containerd.toml",
        "containerd-shim",
    )
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(n in cmdline + " " for n in needles):
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found


def _leftovers(bin_dir: Path, records: list[node.PidRecord]) -> list[str]:
    """Everything `down` should have removed, that is still there."""
    left = [f"process {p}" for p in _node_processes(bin_dir)]
    left += [f"process {rec.name} (pid {rec.pid})" for rec in records if rec.alive()]
    if paths.NETNS_PATH.exists():
        left.append(f"netns file {paths.NETNS_PATH}")
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    if paths.NETNS in netns:
        left.append(f"netns {paths.NETNS} listed")
    if Path("/sys/class/net", paths.HOST_IFACE).exists():
        left.append(f"host link {paths.HOST_IFACE}")
    mounts = Path("/proc/self/mountinfo").read_text()
    left += [f"mount: {line}" for line in mounts.splitlines() if "svcscope" in line]
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        if (hierarchy / paths.CGROUP_ROOT.lstrip("/")).exists():
            left.append(f"cgroup {hierarchy / paths.CGROUP_ROOT.lstrip('/')}")
    if paths.STATE_DIR.exists():
        left.append(f"state dir {paths.STATE_DIR}")
    for tool in ("iptables-save", "ip6tables-save"):
        rules = subprocess.run([tool], capture_output=True, text=True, check=False).stdout
        left += [f"{tool}: {line}" for line in rules.splitlines() if _ours(line)]
    return left


def _ours(rule: str) -> bool:
    return any(mark in rule for mark in ("KUBE-", "CNI-", "198.18.", "198.19.", paths.BRIDGE_IFACE + " "))


def test_up_twice_is_a_no_op(cluster: Cluster) -> None:
    before = _pids_file_contents()
    started = time.monotonic()
    devcluster("up", timeout=120)
    assert time.monotonic() - started < 15
    assert _pids_file_contents() == before


def test_down_leaves_nothing_and_up_after_down_works(cluster: Cluster) -> None:
    records = node.read_records()
    assert len(records) == 8, records
    host_rules = [
        line for line in _leftovers(cluster.bin_dir, []) if line.startswith(("iptables", "ip6tables"))
    ]
    assert host_rules == [], "the host's iptables must never carry the cluster's rules"
    devcluster("down", timeout=120)
    assert _leftovers(cluster.bin_dir, records) == []

    devcluster("up", timeout=900)
    status = devcluster("status", check=False)
    assert status.returncode == 0, status.stdout
    nodes = cluster.get("nodes")["items"]
    assert [c["status"] for c in nodes[0]["status"]["conditions"] if c["type"] == "Ready"] == ["True"]
