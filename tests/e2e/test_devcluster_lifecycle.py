"""`up` twice is a no-op; `down` leaves nothing behind; `up` after `down` works.

conftest.py orders this module after every other e2e test: it takes the shared node down.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from devcluster import node, paths, topology
from tests.e2e.conftest import PROXY_MODE, Cluster, devcluster

pytestmark = pytest.mark.e2e


def _pids_file_contents() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(paths.PID_DIR.glob("*.pid"))}


def _in_our_cgroup(entry: Path) -> bool:
    """Is the process in a cgroup below this instance's root (another instance's root is a sibling)?"""
    try:
        lines = (entry / "cgroup").read_text().splitlines()
    except OSError:
        return False
    ours = paths.CGROUP_ROOT.lstrip("/")
    return any(line.split(":", 2)[-1].lstrip("/").split("/", 1)[0] == ours for line in lines)


def node_processes(bin_dir: Path) -> list[str]:
    """Live processes that belong to this instance's nodes: its binaries on its state, etcd/containerd on its
    state, and whatever sits in its cgroups (containerd's shims, CoreDNS, pods).

    Clients of other tests (kubectl, helm, buildah) may mention the same paths and are not the node's; the
    processes of another instance name another state directory and live in another cgroup tree."""
    binaries = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")
    state = f"{paths.STATE_DIR}/"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            proc_state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        ours_by_cmdline = state in cmdline and (
            any(f"{bin_dir}/{name} " in cmdline + " " for name in binaries)
            or cmdline.startswith(("/usr/bin/etcd ", "/usr/bin/containerd "))
        )
        if proc_state != "Z" and (ours_by_cmdline or _in_our_cgroup(entry)):
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found


def _our_mount(line: str) -> bool:
    """A host mount of this instance: below its state directory, or one of its namespace pins."""
    point = Path(line.split()[4])
    pins = {p.name for p in topology.node_netns_paths()} | {paths.NETNS, paths.FABRIC_NETNS}
    return (
        point == paths.STATE_DIR
        or paths.STATE_DIR in point.parents
        or (point.parent == Path("/run/netns") and point.name in pins)
    )


def leftovers(bin_dir: Path, records: list[node.PidRecord], netns_names: list[str]) -> list[str]:
    """Everything `down` should have removed, that is still there (of this instance only)."""
    left = [f"process {p}" for p in node_processes(bin_dir)]
    left += [f"process {rec.name} (pid {rec.pid})" for rec in records if rec.alive()]
    listed = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=False
    ).stdout.split()
    for name in {*netns_names, paths.NETNS, paths.FABRIC_NETNS}:
        if (Path("/run/netns") / name).exists():
            left.append(f"netns file /run/netns/{name}")
        if name in listed:
            left.append(f"netns {name} listed")
    if Path("/sys/class/net", paths.HOST_IFACE).exists():
        left.append(f"host link {paths.HOST_IFACE}")
    mounts = Path("/proc/self/mountinfo").read_text()
    left += [f"mount: {line}" for line in mounts.splitlines() if _our_mount(line)]
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        if (hierarchy / paths.CGROUP_ROOT.lstrip("/")).exists():
            left.append(f"cgroup {hierarchy / paths.CGROUP_ROOT.lstrip('/')}")
    if paths.STATE_DIR.exists():
        left.append(f"state dir {paths.STATE_DIR}")
    for tool in (["iptables-save"], ["ip6tables-save"], ["nft", "list", "ruleset"]):
        if shutil.which(tool[0]) is None:
            continue  # nft comes with the nftables package (`install`); without it there are no such rules
        rules = subprocess.run(tool, capture_output=True, text=True, check=False).stdout
        left += [f"{tool[0]}: {line}" for line in rules.splitlines() if _ours(line)]
    return left


def _ours(rule: str) -> bool:
    marks = ("KUBE-", "CNI-", "kube-proxy", "198.18.", "198.19.", paths.BRIDGE_IFACE + " ")
    return any(mark in rule for mark in marks)


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
        line
        for line in leftovers(cluster.bin_dir, [], [])
        if line.startswith(("iptables", "ip6tables", "nft"))
    ]
    assert host_rules == [], "the host's iptables must never carry the cluster's rules"
    devcluster("down", timeout=120)
    assert leftovers(cluster.bin_dir, records, []) == []

    devcluster("up", "--proxy-mode", PROXY_MODE, timeout=900)
    status = devcluster("status", check=False)
    assert status.returncode == 0, status.stdout
    nodes = cluster.get("nodes")["items"]
    assert [c["status"] for c in nodes[0]["status"]["conditions"] if c["type"] == "Ready"] == ["True"]
