"""Probe runs survive the dashboard's pod dying, through the installed chart on the real cluster.

The devcluster has no StorageClass and no provisioner, so the test pre-provisions what a cluster admin
would: a ``local`` PersistentVolume (a directory in the node's mount namespace, pinned to the node) and a
claim bound to it, handed to the chart as ``persistence.existingClaim``. A ``local`` volume (unlike a
``hostPath`` one) gets the pod's fsGroup, so the non-root dashboard can write it. The default emptyDir is
covered too: it keeps the runs across a container restart (SIGKILL), not across a pod deletion.

What a user sees is asserted through ``kubectl port-forward``: a finished run reads back identical (JSON
and CSV) after its Service's pods were replaced and after each kind of dashboard death; the run that was
going on reads "interrupted at N/M", never "running"; an unknown run's stream is a 404 that says why.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.chart.release import Release, port_forward
from tests.e2e.conftest import Cluster, EchoApp, deploy_echo_app, wait_for
from tests.e2e.dashboard import sigkill_dashboard
from tests.e2e.released import chart_release

pytestmark = pytest.mark.e2e

SELECTOR = "app.kubernetes.io/name=svcscope"
LONG_RUN = {"count": 10_000, "concurrency": 1, "timeout_s": 2.0}
RESTART_TIMEOUT_S = 120.0
# The store writes a running run's first results at once and the rest at least every 0.5 s: what the
# dashboard showed this long before a SIGKILL is on disk (the margin covers a loaded node's slow writes).
RECORDED_WITHIN_S = 2.0


@pytest.fixture
def release(cluster: Cluster, namespace: str) -> Iterator[Release]:
    rel = chart_release(cluster, namespace)
    yield rel
    rel.uninstall(wait=False)


@pytest.fixture
def local_claim(cluster: Cluster, namespace: str) -> Iterator[str]:
    """A claim bound to a pre-provisioned ``local`` PV on the node; yields the claim's name."""
    node = cluster.get("nodes")["items"][0]["metadata"]["labels"]["kubernetes.io/hostname"]
    path = f"/var/lib/svcscope-e2e/{namespace}"
    pv = f"{namespace}-runs"
    cluster.exec_in_netns("mkdir", "-p", path)
    cluster.apply(
        f"""
        apiVersion: v1
        kind: PersistentVolume
        metadata:
          name: {pv}
        spec:
          capacity: {{storage: 1Gi}}
          accessModes: [ReadWriteOnce]
          persistentVolumeReclaimPolicy: Retain
          storageClassName: svcscope-e2e-local
          claimRef: {{namespace: {namespace}, name: runs}}
          local: {{path: {path}}}
          nodeAffinity:
            required:
              nodeSelectorTerms:
                - matchExpressions:
                    - {{key: kubernetes.io/hostname, operator: In, values: [{node}]}}
        ---
        apiVersion: v1
        kind: PersistentVolumeClaim
        metadata:
          name: runs
          namespace: {namespace}
        spec:
          storageClassName: svcscope-e2e-local
          accessModes: [ReadWriteOnce]
          resources: {{requests: {{storage: 1Gi}}}}
        """
    )
    try:
        yield "runs"
    finally:
        cluster.kubectl("delete", "pvc", "runs", "-n", namespace, "--wait=false", check=False)
        cluster.kubectl("delete", "pv", pv, "--wait=false", check=False)
        cluster.exec_in_netns("rm", "-rf", path, check=False)


class Dash:
    """The installed dashboard, reached through a port-forward that is re-opened after each restart."""

    def __init__(self, cluster: Cluster, release: Release) -> None:
        self.cluster, self.release = cluster, release
        self.kubectl = [str(cluster.bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}"]
        self._stack = contextlib.ExitStack()
        self.http: httpx.Client | None = None

    def connect(self) -> httpx.Client:
        self._stack.close()
        self._stack = contextlib.ExitStack()
        url = self._stack.enter_context(
            port_forward(self.kubectl, self.release.namespace, self.release.fullname)
        )
        self.http = self._stack.enter_context(httpx.Client(base_url=url, timeout=30))
        return self.http

    def close(self) -> None:
        self._stack.close()

    def pod(self) -> dict[str, Any]:
        pods = self.cluster.ready_pods(
            self.release.namespace, f"{SELECTOR},app.kubernetes.io/instance={self.release.name}"
        )
        assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
        return pods[0]

    def get(self, path: str) -> httpx.Response:
        """GET through the port-forward; a port-forward that died (it does when the apiserver restarts,
        and other tests restart it on the shared cluster) is opened again once."""
        assert self.http is not None
        try:
            return self.http.get(path)
        except httpx.TransportError:
            return self.connect().get(path)

    def start(self, app: EchoApp, **body: Any) -> str:
        assert self.http is not None
        r = self.http.post(
            "/api/v1/probes", json={"namespace": app.namespace, "service": app.name, "port": "http", **body}
        )
        assert r.status_code == 202, r.text
        run_id: str = r.json()["id"]
        return run_id

    def wait_finished(self, run_id: str, timeout: float = 120.0) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            data: dict[str, Any] = self.get(f"/api/v1/probes/{run_id}").json()
            return data if data["status"] != "running" else None

        data = wait_for(finished, timeout, f"run {run_id} to finish")
        assert data is not None
        return data

    def done(self, run_id: str) -> int:
        data: dict[str, Any] = self.get(f"/api/v1/probes/{run_id}").json()
        assert data["status"] == "running", data["status"]
        return int(data["done"])

    def wait_recorded(self, run_id: str, done: int, timeout: float = 60.0) -> int:
        """Until the run showed at least ``done`` results ``RECORDED_WITHIN_S`` ago and still runs; returns
        what it showed then (which even a SIGKILL from now on keeps)."""
        seen: list[tuple[float, int]] = []

        def recorded() -> int | None:
            now = time.monotonic()
            seen.append((now, self.done(run_id)))
            old = [n for at, n in seen if now - at >= RECORDED_WITHIN_S]
            return old[-1] if old and old[-1] >= done else None

        what = f"run {run_id} to show {done} results {RECORDED_WITHIN_S:g} s ago"
        shown = wait_for(recorded, timeout, what)
        assert shown is not None
        return shown

    def wait_replaced(self, old_uid: str, old_restarts: int) -> None:
        """A new pod (or the same pod's restarted container) is Ready; then reconnect."""

        def replaced() -> bool:
            pods = self.cluster.ready_pods(
                self.release.namespace, f"{SELECTOR},app.kubernetes.io/instance={self.release.name}"
            )
            if len(pods) != 1:
                return False
            pod = pods[0]
            restarts = sum(c.get("restartCount", 0) for c in pod["status"].get("containerStatuses", []))
            return bool(pod["metadata"]["uid"] != old_uid or restarts > old_restarts)

        wait_for(replaced, RESTART_TIMEOUT_S, "the dashboard to come back")
        self.connect()


def _restarts(pod: dict[str, Any]) -> int:
    return sum(c.get("restartCount", 0) for c in pod["status"].get("containerStatuses", []))


def _assert_kept(dash: Dash, run_id: str, expected: dict[str, Any], csv: str) -> None:
    r = dash.get(f"/api/v1/probes/{run_id}")
    assert r.status_code == 200, r.text
    assert r.json() == expected
    assert dash.get(f"/api/v1/probes/{run_id}.csv").text == csv


def _assert_interrupted(dash: Dash, run_id: str, shown: int) -> None:
    """The run cut short reads "interrupted at N/10000" with every result it had ``shown`` (at least 20)."""
    data = dash.get(f"/api/v1/probes/{run_id}").json()
    assert data["status"] == "interrupted", data["status"]
    assert data["error"].startswith(f"interrupted at {data['done']}/10000"), data["error"]
    assert data["done"] >= shown >= 20, (data["done"], shown)
    assert len(data["sequence"]) == data["done"]
    page = dash.get(f"/runs/{run_id}").text
    assert "interrupted at" in page and "sse-connect" not in page
    # A tab left open on the run reconnects its stream: it gets the final block, not "running" forever.
    stream = dash.get(f"/runs/{run_id}/stream")
    events = [ln for ln in stream.text.splitlines() if ln.startswith("event:")]
    assert stream.status_code == 200 and events == ["event: done"]


def test_runs_survive_every_kind_of_dashboard_death(
    cluster: Cluster, namespace: str, release: Release, local_claim: str
) -> None:
    app = deploy_echo_app(cluster, namespace, "web", replicas=3)
    release.install(
        "persistence.enabled=true",
        f"persistence.existingClaim={local_claim}",
        f"rbac.namespaces={{{namespace}}}",
    )
    dash = Dash(cluster, release)
    try:
        dash.connect()
        finished = dash.start(app, count=300, concurrency=10)
        first = dash.wait_finished(finished)
        assert first["status"] == "done" and first["done"] == 300 and first["chi_square"] is not None
        csv = dash.get(f"/api/v1/probes/{finished}.csv").text

        # An unknown run: 404 with the reason, before any stream starts.
        unknown = dash.get("/runs/000000000000/stream")
        assert unknown.status_code == 404 and "no such run" in unknown.text

        # The Service's pods are replaced: the finished report does not change.
        old_pods = {p["metadata"]["name"] for p in cluster.pods(namespace, app.selector)}
        cluster.kubectl("rollout", "restart", f"deployment/{app.name}", "-n", namespace)
        cluster.kubectl(
            "rollout", "status", f"deployment/{app.name}", "-n", namespace, "--timeout=150s", timeout=160
        )
        wait_for(
            lambda: not old_pods & {p["metadata"]["name"] for p in cluster.pods(namespace, app.selector)},
            120,
            "the old echo pods to be gone",
        )
        _assert_kept(dash, finished, first, csv)

        deaths = {
            "deleted gracefully": ["delete", "pod", "--wait=false"],
            "force-deleted": ["delete", "pod", "--grace-period=0", "--force", "--wait=false"],
            "SIGKILLed": None,
        }
        timings: dict[str, float] = {}
        for death, command in deaths.items():
            pod = dash.pod()
            running = dash.start(app, **LONG_RUN)
            recorded = dash.wait_recorded(running, 20)
            last = dash.done(running)
            started = time.monotonic()
            if command is None:
                sigkill_dashboard(pod["metadata"]["name"])
            else:
                release.kubectl(*command, "-n", namespace, pod["metadata"]["name"])
            dash.wait_replaced(pod["metadata"]["uid"], _restarts(pod))
            timings[death] = round(time.monotonic() - started, 1)
            _assert_kept(dash, finished, first, csv)
            # A graceful stop records every result the run had; a force delete becomes a SIGKILL when the
            # process takes over the kubelet's 2 s to stop, and a SIGKILL keeps what was written.
            _assert_interrupted(dash, running, last if death == "deleted gracefully" else recorded)
        print(json.dumps({"back_after_s": timings}))
    finally:
        dash.close()


def test_default_empty_dir_keeps_runs_across_a_container_restart(
    cluster: Cluster, namespace: str, release: Release
) -> None:
    app = deploy_echo_app(cluster, namespace, "web", replicas=2)
    release.install(f"rbac.namespaces={{{namespace}}}")
    dash = Dash(cluster, release)
    try:
        dash.connect()
        finished = dash.start(app, count=100, concurrency=5)
        first = dash.wait_finished(finished)
        csv = dash.get(f"/api/v1/probes/{finished}.csv").text
        pod = dash.pod()
        running = dash.start(app, **LONG_RUN)
        recorded = dash.wait_recorded(running, 20)
        sigkill_dashboard(pod["metadata"]["name"])
        dash.wait_replaced(pod["metadata"]["uid"], _restarts(pod))
        assert dash.pod()["metadata"]["uid"] == pod["metadata"]["uid"]  # the same pod, a new container
        _assert_kept(dash, finished, first, csv)
        _assert_interrupted(dash, running, recorded)
    finally:
        dash.close()
