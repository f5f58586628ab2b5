"""`kubectl svcscope` as users run it: kubectl finds the plugin installed with the package on the PATH, the
plugin finds the chart's release, forwards a local port to it and keeps it answering while the dashboard pod
is replaced. The release runs with the chart's ServiceAccount; the admin kubeconfig is the user's."""

from __future__ import annotations

import calendar
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.chart.release import Release
from tests.e2e.conftest import Cluster, wait_for
from tests.e2e.released import chart_release, dashboard_pod

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"
PLUGIN_DIR = Path(sys.executable).parent  # where the package's scripts, kubectl-svcscope among them, live
# The URL answers again once the new pod does: its own start-up (8-17 s measured on this loaded 2-core
# machine) plus the plugin's lag, which is what is bounded here: the Ready time is in whole seconds (+1), then
# at most one backoff delay (2 s) and one start of kubectl (+2).
PLUGIN_LAG_S = 5.0
ANSWER_AGAIN_WITHIN_S = 60.0
SELECTOR = "app.kubernetes.io/name=svcscope"


@pytest.fixture
def release(cluster: Cluster, namespace: str) -> Iterator[Release]:
    rel = chart_release(cluster, namespace)
    try:
        rel.install()
        yield rel
    finally:
        rel.uninstall(wait=False)


def kubectl_svcscope(
    cluster: Cluster, *args: str, stderr: IO[str] | int = subprocess.PIPE
) -> subprocess.Popen[str]:
    """`kubectl svcscope ARGS`, kubectl and the plugin found on the PATH as a user's shell would."""
    env = {**os.environ, "PATH": f"{cluster.bin_dir}:{PLUGIN_DIR}:{os.environ.get('PATH', '')}"}
    env.pop("KUBECONFIG", None)
    return subprocess.Popen(
        ["kubectl", "svcscope", "--kubeconfig", str(cluster.kubeconfig), *args],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, text=True,
    )  # fmt: skip


def started_at(http: httpx.Client) -> float | None:
    """The dashboard process's start time (Prometheus process collector): tells a new pod from the old."""
    try:
        r = http.get("/metrics")
    except httpx.TransportError:
        return None
    match = re.search(r"^process_start_time_seconds (\S+)$", r.text, re.M) if r.status_code == 200 else None
    return float(match.group(1)) if match else None


def test_the_url_answers_again_after_the_dashboard_pod_is_replaced(
    cluster: Cluster, release: Release, tmp_path: Path
) -> None:
    log = tmp_path / "plugin.log"
    with log.open("w") as err:
        plugin = kubectl_svcscope(cluster, "-n", release.namespace, "--port", "0", stderr=err)
    try:
        assert plugin.stdout is not None
        readable, _, _ = select.select([plugin.stdout], [], [], 120)
        assert readable, f"no URL printed in 120 s:\n{log.read_text()}"
        url = plugin.stdout.readline().strip()
        assert re.fullmatch(r"http://localhost:\d+/", url), (url, log.read_text())
        with httpx.Client(
            base_url=url, timeout=2.0, limits=httpx.Limits(max_keepalive_connections=0)
        ) as http:
            assert http.get("/healthz").status_code == 200
            before = started_at(http)
            assert before is not None
            old = dashboard_pod(cluster, release)["metadata"]["name"]
            cluster.kubectl("delete", "pod", old, "-n", release.namespace, "--wait=false")
            deleted, deleted_wall = time.monotonic(), time.time()
            first_miss = back = None
            while back is None and time.monotonic() - deleted < 90:
                now = started_at(http)
                if now is None and first_miss is None:
                    first_miss = time.monotonic() - deleted
                elif now is not None and now != before:
                    back = time.monotonic() - deleted
                time.sleep(0.1)  # polling the URL, bounded by the deadline above
        assert back is not None, f"the URL never reached a new dashboard:\n{log.read_text()}"
        new = wait_for(
            lambda: [
                p for p in cluster.ready_pods(release.namespace, SELECTOR) if p["metadata"]["name"] != old
            ],
            90,
            "the new dashboard pod Ready",
        )
        assert len(new) == 1, [p["metadata"]["name"] for p in new]
        # When Kubernetes saw the new pod Ready (whole seconds), for comparison: the pod's own start-up.
        (ready,) = [c for c in new[0]["status"]["conditions"] if c["type"] == "Ready"]
        ready_at = calendar.timegm(time.strptime(ready["lastTransitionTime"], "%Y-%m-%dT%H:%M:%SZ"))
        ready_after = ready_at - deleted_wall
        measured = {
            "first_miss_after_s": round(first_miss or -1, 2),
            "answers_after_s": round(back, 2),
            "pod_ready_after_s": round(ready_after, 2),
        }
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "plugin-e2e.json").write_text(json.dumps(measured, indent=2) + "\n")
        print(f"\nkubectl svcscope after the dashboard pod's deletion: {measured}")
        plugin.send_signal(signal.SIGINT)  # Ctrl-C
        assert plugin.wait(15) == 0, log.read_text()
        said = log.read_text()
        (ARTIFACTS / "plugin-e2e.log").write_text(said)
        assert back <= ANSWER_AGAIN_WITHIN_S, f"answered again after {back:.1f} s:\n{said}"
        lag = back - ready_after
        assert lag <= PLUGIN_LAG_S, f"answered {lag:.1f} s after the new pod was Ready:\n{said}"
        assert re.search(r"restart 1 in [\d.]+ s", said), said
        assert "answering again at " + url in said, said
        assert said.rstrip().endswith("restart(s)") and "Traceback" not in said, said
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "healthz", timeout=2.0)  # its port-forward ended with it
    finally:
        if plugin.poll() is None:
            plugin.kill()
            plugin.wait(10)
        if plugin.stdout is not None:
            plugin.stdout.close()


def test_no_release_in_the_namespace_is_a_clear_error(cluster: Cluster, namespace: str) -> None:
    plugin = kubectl_svcscope(cluster, "-n", namespace)
    out, err = plugin.communicate(timeout=60)
    assert plugin.returncode == 1 and out == ""
    assert err.startswith("kubectl-svcscope: error: no svcscope Service (app.kubernetes.io/name=svcscope)")
    assert f"in namespace '{namespace}' (-n)" in err and err.rstrip().endswith("-n NAMESPACE")
    assert "Traceback" not in err
