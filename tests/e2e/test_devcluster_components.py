"""`devcluster stop|start` on the real node: a start finds whoever holds the component's ports, kills a stray
copy of the same program (which no PID file names) and refuses to start over anything else.

kube-scheduler is the component used: it listens on one port (10259) and nothing in the tests depends on it
being there for a few seconds. Marked `faults`: it stops a part of the node."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster import cluster as devcluster_cluster
from devcluster import components, config, topology
from tests.e2e.conftest import Cluster, devcluster, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
NAME = "kube-scheduler"
PORT = 10259


def _holders() -> set[int]:
    node = topology.current().node_list()[0]
    return components.listeners(node.netns_path, {PORT}).get(PORT, set())


def _inside(*argv: str) -> subprocess.Popen[bytes]:
    """A process inside the node's namespaces, as `devcluster exec` starts it (it becomes the program)."""
    return subprocess.Popen(
        [sys.executable, "-m", "devcluster", "exec", "--", *argv],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture
def scheduler_stopped(cluster: Cluster) -> Iterator[None]:
    devcluster("stop", NAME)
    assert not _holders(), "stop returned with the port still held"
    try:
        yield
    finally:
        devcluster("start", NAME, timeout=180)


def _end(proc: subprocess.Popen[bytes]) -> int | None:
    if proc.poll() is None:
        proc.kill()
    return proc.wait(15)


def test_a_stray_copy_on_the_port_is_killed_and_the_component_started(scheduler_stopped: None) -> None:
    argv = config.components(devcluster_cluster.bin_dir())[NAME].argv
    stray = _inside(*argv)  # the same program, started by nobody's PID file
    try:
        wait_for(lambda: stray.pid in _holders(), 60, "the stray scheduler listening")
        started = devcluster("start", NAME, timeout=180)
        assert f"killing a stray kube-scheduler (pid {stray.pid}) that holds port {PORT}" in started.stderr
        assert f"{NAME}: healthy" in started.stderr, started.stderr
        assert stray.wait(15) == -9  # SIGKILLed
        holders = _holders()
        assert holders and stray.pid not in holders
    finally:
        _end(stray)


def test_something_else_on_the_port_is_named_not_killed(scheduler_stopped: None) -> None:
    other = _inside("python3", "-m", "http.server", str(PORT), "--bind", "127.0.0.1")
    try:
        wait_for(lambda: other.pid in _holders(), 60, "another program listening on the port")
        refused = devcluster("start", NAME, check=False, timeout=180)
        assert refused.returncode == 1
        assert f"port {PORT} of {NAME} is held by pid {other.pid} (python3), not by {NAME}" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert other.poll() is None  # left alone
    finally:
        _end(other)
    wait_for(lambda: not _holders(), 15, "the port free")
