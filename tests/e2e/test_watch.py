"""Watch mode on the real cluster, through the shipped artifact: the image from the Dockerfile, installed by
the chart (its ServiceAccount and RBAC), reached with `kubectl port-forward` as a user would.

A watch probes an echo Service from the dashboard pod while the test scales it, restarts it or flips its
session affinity; the timeline must show each change and the numbers derived from it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts import demo
from tests.chart.release import Release, port_forward
from tests.e2e.conftest import Cluster, EchoApp, deploy_echo_app
from tests.e2e.dashboard import sigkill_dashboard
from tests.e2e.test_persist import Dash, _restarts

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
ERROR_KINDS = {"refused", "reset", "timeout", "closed", "no_endpoints", "unreachable", "bad_response"}
RATE = 20


@pytest.fixture(scope="module")
def watch_ns(cluster: Cluster) -> Iterator[str]:
    name = f"e2e-watch-{uuid.uuid4().hex[:6]}"
    cluster.create_namespace(name, timeout=120)  # a busy node's controller-manager can take a while
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def dashboard(cluster: Cluster, watch_ns: str) -> Iterator[httpx.Client]:
    demo.build_image()
    release = Release(
        namespace=watch_ns,
        kubectl=cluster.kubectl,
        helm_base=[str(cluster.bin_dir / "helm"), "--kubeconfig", str(cluster.kubeconfig)],
    )
    try:
        release.install()
        kubectl = [str(cluster.bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}"]
        with (
            port_forward(kubectl, watch_ns, release.fullname) as url,
            httpx.Client(base_url=url, timeout=30) as c,
        ):
            yield c
    finally:
        release.uninstall(wait=False)


def _record(name: str, value: object) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "watch-e2e.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = value
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def poll(
    c: httpx.Client, watch_id: str, check: Any, timeout: float, what: str, *, ended: bool = False
) -> dict[str, Any]:
    """GET the watch until ``check(data)``; bounded by ``timeout``. A watch that is no longer running ends the
    wait at once, unless ``ended`` says the check is about what comes after its end (its requests under way
    end by their own timeout, then its end is written to the store)."""
    deadline = time.monotonic() + timeout
    data: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = c.get(f"/api/v1/watches/{watch_id}")
        assert r.status_code == 200, r.text
        data = r.json()
        if check(data):
            return data
        if data["status"] not in ("starting", "running") and not ended:
            break
        time.sleep(0.5)
    summary = {k: data.get(k) for k in ("status", "error", "requests", "total", "rolling", "measurements")}
    raise AssertionError(f"timed out waiting for {what}: {json.dumps(summary)[:3000]}")


def start(c: httpx.Client, app: EchoApp, **kw: Any) -> str:
    body = {"namespace": app.namespace, "service": app.name, "port": "http", "rate": RATE, "duration_s": 300}
    r = c.post("/api/v1/watches", json={**body, **kw})
    assert r.status_code == 202, r.text
    watch_id: str = r.json()["id"]
    return watch_id


def stop(c: httpx.Client, watch_id: str) -> dict[str, Any]:
    r = c.post(f"/api/v1/watches/{watch_id}/stop", json={}, headers={"Accept": "application/json"})
    assert r.status_code == 202, r.text
    return poll(c, watch_id, lambda d: d["status"] not in ("starting", "running"), 30, "the stop")


def accounted(data: dict[str, Any]) -> int:
    t = data["total"]
    return int(sum(t["hits"].values()) + t["unattributed"] + sum(t["errors"].values()))


def serving(app: EchoApp, pods: int) -> Any:
    """All ``pods`` answered within the rolling window (kube-proxy has programmed the Service)."""
    return lambda d: len(d["rolling"]["hits"]) >= pods


def first_hit(data: dict[str, Any]) -> bool:
    return any(x["lag_s"] is not None for x in data["measurements"]["ready_to_first_hit"])


def test_scale_up_new_pods_get_traffic_after_ready(
    cluster: Cluster, dashboard: httpx.Client, watch_ns: str
) -> None:
    app = deploy_echo_app(cluster, watch_ns, "scale", replicas=3)
    watch_id = start(dashboard, app, window_s=5)
    poll(dashboard, watch_id, serving(app, 3), 60, "traffic on the 3 pods")
    cluster.kubectl("scale", "deployment", app.name, "-n", watch_ns, "--replicas=5")
    data = poll(
        dashboard,
        watch_id,
        lambda d: len([x for x in d["measurements"]["ready_to_first_hit"] if x["lag_s"] is not None]) >= 2,
        120,
        "both new pods' first hits",
    )
    data = stop(dashboard, watch_id)
    lags = {x["pod"]: x["lag_s"] for x in data["measurements"]["ready_to_first_hit"]}
    _record("scale_ready_to_first_hit_s", lags)
    assert len(lags) == 2, data["events"]
    assert all(lag is not None and 0 < lag < 10 for lag in lags.values()), lags
    added = {e["pod"] for e in data["events"] if e["kind"] == "added"}
    assert added == set(lags)
    assert set(lags) <= set(data["total"]["hits"])
    assert accounted(data) == data["requests"] > 0
    errors_at = {s["second"]: s["errors"] for s in data["seconds"] if s["errors"]}
    _record(
        "scale_requests",
        {
            "sent": data["requests"],
            "errors": data["total"]["errors"],
            "skipped": data["skipped"],
            "at": errors_at,
        },
    )
    # The page shows the new pods on the timeline, each marker saying what changed when hovered.
    page = dashboard.get(f"/watches/{watch_id}").text
    for pod in lags:
        assert f"endpoint {pod} (" in page and f": {pod} " in page  # a marker title and a bar title
    rows = dashboard.get(f"/api/v1/watches/{watch_id}.csv").text.splitlines()
    assert rows[0].startswith("second,requests,pod,hits") and len(rows) > 10


def test_rollout_restart_every_error_classified(
    cluster: Cluster, dashboard: httpx.Client, watch_ns: str
) -> None:
    app = deploy_echo_app(cluster, watch_ns, "roll", replicas=3)
    watch_id = start(dashboard, app, window_s=5)
    before = poll(dashboard, watch_id, serving(app, 3), 60, "traffic on the 3 pods")
    old = set(before["rolling"]["hits"])
    cluster.kubectl("rollout", "restart", "deployment", app.name, "-n", watch_ns)
    cluster.kubectl(
        "rollout", "status", "deployment", app.name, "-n", watch_ns, "--timeout=120s", timeout=150
    )
    poll(
        dashboard,
        watch_id,
        lambda d: len(d["rolling"]["hits"]) >= 3 and not set(d["rolling"]["hits"]) & old,
        60,
        "traffic on the 3 new pods only",
    )
    data = stop(dashboard, watch_id)
    assert accounted(data) == data["requests"] > 0
    assert set(data["total"]["errors"]) <= ERROR_KINDS, data["total"]["errors"]
    kinds: dict[str, set[str]] = {}
    for e in data["events"]:
        kinds.setdefault(e["kind"], set()).add(e["pod"])
    new = set(data["total"]["hits"]) - old
    assert len(new) == 3
    assert old <= kinds.get("terminating", set()) | kinds.get("removed", set()), kinds
    assert new <= kinds.get("ready", set()), kinds
    m = data["measurements"]
    _record(
        "rollout",
        {
            "sent": data["requests"],
            "errors": data["total"]["errors"],
            "change_errors": m["change_errors"],
            "ready_to_first_hit_s": {x["pod"]: x["lag_s"] for x in m["ready_to_first_hit"]},
            "gone_to_last_hit_s": {x["pod"]: x["lag_s"] for x in m["gone_to_last_hit"]},
        },
    )


def test_affinity_flip_converges_on_one_pod(cluster: Cluster, dashboard: httpx.Client, watch_ns: str) -> None:
    app = deploy_echo_app(cluster, watch_ns, "flip", replicas=3)
    watch_id = start(dashboard, app, window_s=5)
    poll(dashboard, watch_id, serving(app, 3), 60, "traffic on the 3 pods")
    patch = json.dumps({"spec": {"sessionAffinity": "ClientIP"}})
    cluster.kubectl("patch", "service", app.name, "-n", watch_ns, "--type=merge", "-p", patch)
    data = poll(
        dashboard,
        watch_id,
        lambda d: (
            any(c["converged_after_s"] is not None for c in d["measurements"]["affinity_convergence"])
            and len(d["rolling"]["hits"]) == 1
        ),
        90,
        "the rolling distribution to converge on one pod",
    )
    (c,) = data["measurements"]["affinity_convergence"]
    assert (c["before"], c["after"]) == ("None", "ClientIP")
    assert c["pod"] in data["rolling"]["hits"] and c["converged_after_s"] < 30
    _record("clientip_converged_after_s", c["converged_after_s"])
    data = stop(dashboard, watch_id)
    assert accounted(data) == data["requests"]


def test_a_stored_watch_shows_its_markers_after_the_dashboard_restarts(
    cluster: Cluster, watch_ns: str
) -> None:
    """Two watches of one Service while it scales up; one is stopped, the other still runs when the
    dashboard's process is SIGKILLed. The restarted dashboard (same pod, its emptyDir store) shows both from
    the store: the timeline with the new pod's markers, the Ready → first hit number, JSON and CSV."""
    demo.build_image()
    release = Release(
        namespace=watch_ns,
        kubectl=cluster.kubectl,
        helm_base=[str(cluster.bin_dir / "helm"), "--kubeconfig", str(cluster.kubeconfig)],
        name="restart",
    )
    app = deploy_echo_app(cluster, watch_ns, "kept", replicas=2)
    dash = Dash(cluster, release)
    try:
        release.install(f"rbac.namespaces={{{watch_ns}}}")
        c = dash.connect()
        stopped, running = start(c, app, window_s=5), start(c, app, window_s=5)
        for watch_id in (stopped, running):
            poll(c, watch_id, serving(app, 2), 60, "traffic on the 2 pods")
        cluster.kubectl("scale", "deployment", app.name, "-n", watch_ns, "--replicas=3")
        live = {w: poll(c, w, first_hit, 120, "the new pod's first hit") for w in (stopped, running)}
        (new_pod,) = {x["pod"] for x in live[stopped]["measurements"]["ready_to_first_hit"]}
        live[stopped] = stop(c, stopped)
        poll(c, stopped, lambda d: d["saved_final"], 30, "the stopped watch's end in the store", ended=True)
        csv = c.get(f"/api/v1/watches/{stopped}.csv").text
        # The running watch's seconds reach the store once no request still under way can change them (the
        # timeout plus a margin after they end), a few at a time: wait on its own clock until the new pod's
        # first second is well past that.
        hit_s = min(x["first_hit_s"] for x in live[running]["measurements"]["ready_to_first_hit"])
        poll(c, running, lambda d: d["elapsed_s"] > hit_s + 8, 60, "the running watch to go on")
        pod = dash.pod()
        started = time.monotonic()
        sigkill_dashboard(pod["metadata"]["name"])
        dash.wait_replaced(pod["metadata"]["uid"], _restarts(pod))
        back_after = round(time.monotonic() - started, 1)
        results: dict[str, Any] = {"back_after_s": back_after}
        for watch_id, status in ((stopped, "cancelled"), (running, "interrupted")):
            r = dash.get(f"/api/v1/watches/{watch_id}")
            assert r.status_code == 200, r.text
            data = r.json()
            assert data["stored"] is True and data["status"] == status, data["status"]
            events = {(e["kind"], e["pod"]) for e in data["events"]}
            assert ("ready", new_pod) in events, data["events"]
            (lag,) = [x for x in data["measurements"]["ready_to_first_hit"] if x["pod"] == new_pod]
            assert lag["lag_s"] is not None and -1 < lag["lag_s"] < 10, lag
            page = dash.get(f"/watches/{watch_id}")
            assert page.status_code == 200 and "from the run store" in page.text
            assert f"s: endpoint {new_pod} (" in page.text  # the marker's hover text
            assert f": {new_pod} " in page.text  # a bar of the new pod
            assert "sse-connect" not in page.text
            results[status] = {"requests": data["requests"], "seconds": len(data["seconds"]), "lag_s": lag}
        assert dash.get(f"/api/v1/watches/{stopped}.csv").text == csv
        stored = dash.get(f"/api/v1/watches/{stopped}").json()
        assert stored["requests"] == live[stopped]["requests"] and stored["total"] == live[stopped]["total"]
        _record("restart", results)
    finally:
        dash.close()
        release.uninstall(wait=False)
