"""A Service with 250 endpoints across the nodes of the multi-node cluster (marker `scale`).

250 is where Kubernetes starts truncating a Service's Endpoints object (EndpointSlices hold 100 each by
default, so this Service has three). The backends are busybox httpd pods that name themselves in the reply
(cheap to start 250 of on this machine). The chart is installed with its own ServiceAccount and RBAC and
reached through `kubectl port-forward`. Checked: the dashboard sees every endpoint, calibration probes the
pods and says how it attributes replies, every reply of a run is attributed, the expected set for the
dashboard's node is all 250 pods and the verdict is "as expected"; "from every node" (a probe pod per node,
the chart's probe-pod RBAC) gets each row's replies attributed to the Service's pods, each row expecting all
250 and judged "as expected"; while a 10,000-request run goes (at the form's default concurrency), its page
and the fragment htmx refreshes keep answering: their 95th percentile stays within RUNNING_RATIO times that of
the same page once the run is over (a baseline measured in the same test, so the bound holds on a slow machine
too) and within the issue's 200 ms plus the p95 of /healthz fetched through the same port-forward at the same
moments (what the machine charges any request). Every wait is a poll with a deadline; every run is bounded.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e import toolimages
from tests.e2e.conftest import REPO, Cluster, wait_for
from tests.e2e.dashboard import Dashboard, wait_serving
from tests.e2e.released import released_dashboard
from tests.e2e.test_devcluster_multinode import Topology, _service
from tests.e2e.test_fanout_multinode import finished, start

pytestmark = [pytest.mark.e2e, pytest.mark.multinode, pytest.mark.scale, pytest.mark.timeout(900)]

ENDPOINTS = 250
SLICE_MAX = 100  # the EndpointSlice controller's default --max-endpoints-per-slice
BIG_RUN = 10_000
RUNNING_RATIO = 4.0  # page p95 while the run goes, against the finished run's page p95
TARGET_MS = 200.0  # the bound on the running page's p95 (beyond what any request costs here)
BASELINE_FETCHES = 12
MAX_PAGE_FETCHES = 2000  # the measuring loop's own bound, whatever the run's speed
STEP = 50  # echo pods started at a time
FANOUT_COUNT = 100  # requests per node's probe pod
SCALE_UP_S = 480.0


@dataclass
class Wide:
    cluster: Cluster
    namespace: str
    dash: Dashboard
    pods: dict[str, str]  # pod -> node


def _ready_replicas(cluster: Cluster, namespace: str, name: str) -> int:
    out = cluster.kubectl(
        "get", "deployment", name, "-n", namespace, "-o", "jsonpath={.status.readyReplicas}"
    ).stdout
    return int(out or 0)


# The backends: busybox's httpd serving a page that names its pod (automatic attribution reads the name).
# 250 Python echo servers cost ~25 MiB each and most of a pod's start-up on this 2-core machine; httpd
# costs little of either, so the test measures the dashboard, not Python's start-up.
BACKEND = """\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: wide, labels: {{app: wide}}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: wide}}}}
  template:
    metadata: {{labels: {{app: wide}}}}
    spec:
      terminationGracePeriodSeconds: 1
      enableServiceLinks: false
      automountServiceAccountToken: false
      topologySpreadConstraints:
        - {{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule,
           labelSelector: {{matchLabels: {{app: wide}}}}}}
      containers:
        - name: httpd
          image: {image}
          imagePullPolicy: Never
          command: [sh, -c, 'echo "pod $POD_NAME $POD_IP" >/www/index.html; exec httpd -f -p 8080 -h /www']
          env:
            - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
            - {{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
          ports: [{{name: http, containerPort: 8080, protocol: TCP}}]
          volumeMounts: [{{name: www, mountPath: /www}}]
          readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 5}}
      volumes: [{{name: www, emptyDir: {{}}}}]
"""


def _import_backend_image(cluster: Cluster) -> None:
    """The busybox image, written locally and imported into every node of the multi-node instance
    (devcluster's paths follow SVCSCOPE_DC_INSTANCE: a child process with it set)."""
    proc = subprocess.run(
        [sys.executable, "-c", "from tests.e2e import toolimages; toolimages.build_and_import()"],
        cwd=REPO,
        env={**os.environ, "SVCSCOPE_DC_INSTANCE": cluster.instance or ""},
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 0, f"importing the busybox image failed:\n{proc.stderr[-4000:]}"


def _scale_up(cluster: Cluster, namespace: str) -> None:
    """The backend Deployment, grown by STEP pods at a time: hundreds of sandboxes started at once on this
    2-core machine make runc and containerd time out (RunContainerError, then the kubelet's back-off)."""
    started = time.monotonic()
    for replicas in range(STEP, ENDPOINTS + STEP, STEP):
        replicas = min(replicas, ENDPOINTS)
        cluster.apply(BACKEND.format(replicas=replicas, image=toolimages.WGET_IMAGE), namespace)
        left = SCALE_UP_S - (time.monotonic() - started)
        wait_for(
            lambda: _ready_replicas(cluster, namespace, "wide") >= replicas,  # noqa: B023 (waited here)
            max(left, 1.0),
            f"{replicas} of {ENDPOINTS} backend pods Ready",
            interval=1.0,
        )


@pytest.fixture(scope="module")
def wide(multinode_cluster: Cluster) -> Iterator[Wide]:
    cluster = multinode_cluster
    namespace = f"e2e-scale-{uuid.uuid4().hex[:5]}"
    _import_backend_image(cluster)
    cluster.create_namespace(namespace)
    try:
        started = time.monotonic()
        _scale_up(cluster, namespace)
        pods = {
            p["metadata"]["name"]: p["spec"]["nodeName"]
            for p in cluster.pods(namespace, "app=wide")
            if not p["metadata"].get("deletionTimestamp")
        }
        print(f"\n{ENDPOINTS} pods Ready in {time.monotonic() - started:.1f} s")
        _service(Topology(cluster, namespace, {}, {}), "wide", "app: wide")
        with released_dashboard(cluster, namespace, "rbac.probePods=true") as (_, dash):
            yield Wide(cluster, namespace, dash, pods)
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _slices(w: Wide) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = w.cluster.get(
        "endpointslices", "-n", w.namespace, "-l", "kubernetes.io/service-name=wide"
    )["items"]
    return items


def _body(w: Wide, **kw: Any) -> dict[str, Any]:
    # A generous per-request timeout: 2 s saw a few timeouts per thousand while 250 pods and other
    # clusters share the 2 cores; an answer that slow is still an answer, and is attributed.
    return {
        "namespace": w.namespace,
        "service": "wide",
        "port": "http",
        "protocol": "HTTP",
        "timeout_s": 10,
        **kw,
    }


def _p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1]


def test_every_endpoint_is_seen_calibrated_attributed_and_expected(wide: Wide) -> None:
    w = wide
    started = time.monotonic()
    assert len(set(w.pods.values())) == 3, f"the pods are not spread over the 3 nodes: {w.pods}"

    def split() -> bool:
        sizes = sorted(len(s.get("endpoints") or []) for s in _slices(w))
        return sum(sizes) == ENDPOINTS and max(sizes) <= SLICE_MAX

    wait_for(split, 120, f"{ENDPOINTS} endpoints in slices of at most {SLICE_MAX}", interval=1.0)
    w.dash.wait_endpoints(w.namespace, "wide", ENDPOINTS, timeout=120)
    page = w.dash.http.get(f"/services/{w.namespace}/wide")
    assert page.status_code == 200 and f"{ENDPOINTS}/{ENDPOINTS}" in page.text.replace(" ", "")
    wait_serving(w.dash, _body(w))
    print(f"\nseen and routed in {time.monotonic() - started:.1f} s")

    run = w.dash.probe(timeout=180, **_body(w, count=1000, concurrency=16))
    assert run["status"] == "done" and run["errors"] == {}, run["errors"]
    assert run["attribution"]["mode"] == "auto", run["attribution"]
    assert run["attributed"] == run["replies"] == 1000 and run["unattributed"]["count"] == 0
    answered = {p["pod"] for p in run["pods"] if p["hits"]}
    assert answered <= set(w.pods) and len(answered) >= 0.9 * ENDPOINTS, len(answered)
    assert {p["pod"] for p in run["pods"]} == set(w.pods), "the report lists every current endpoint"
    routing = run["routing"]
    assert routing is not None and routing["fate"] == "routed", routing
    assert sorted(routing["expected"]) == sorted(w.pods), len(routing["expected"])
    assert routing["as_expected"] is True and routing["verdict"][0].startswith("as expected"), routing
    print(
        f"1000 requests: {len(answered)} pods answered, attribution {run['attribution']['note']!r}; "
        f"{time.monotonic() - started:.1f} s"
    )


def test_from_every_node_each_row_is_attributed_and_as_expected(wide: Wide) -> None:
    w = wide
    started = time.monotonic()
    w.dash.wait_endpoints(w.namespace, "wide", ENDPOINTS, timeout=120)
    wait_serving(w.dash, _body(w))
    data = finished(w.dash, start(w.dash, **_body(w, mode="nodes", count=FANOUT_COUNT)), timeout=300)
    rows = {r["node"]: r for r in data["rows"]}
    assert set(rows) == set(w.pods.values()), data["rows"]
    for node, row in rows.items():
        brief = {k: row[k] for k in ("status", "error", "errors", "unattributed", "state", "verdict")}
        assert row["status"] == "done" and row["error"] is None, (node, brief)
        assert row["errors"] == {} and row["unattributed"] == 0, (node, brief)
        assert sum(row["hits"].values()) == row["done"] == FANOUT_COUNT, (node, brief)
        assert set(row["hits"]) <= set(w.pods), (node, sorted(set(row["hits"]) - set(w.pods)))
        assert sorted(row["expected"]) == sorted(w.pods), (node, len(row["expected"]))
        assert row["fate"] == "routed" and row["state"] == "as expected" and row["as_expected"], (node, brief)
    assert data["as_expected"] is True, data["verdict"]
    used = {p for r in rows.values() for p in r["hits"]}
    print(
        f"\nfrom every node: {len(rows)} rows of {FANOUT_COUNT}, {len(used)} distinct pods answered; "
        f"{time.monotonic() - started:.1f} s"
    )


def test_a_10000_request_run_page_stays_responsive(wide: Wide) -> None:
    w = wide
    w.dash.wait_endpoints(w.namespace, "wide", ENDPOINTS, timeout=120)
    wait_serving(w.dash, _body(w))
    run_id = w.dash.start(**_body(w, count=BIG_RUN, concurrency=10))
    page_ms: list[float] = []
    fragment_ms: list[float] = []
    started = time.monotonic()
    status = "running"
    floor_ms: list[float] = []
    for _ in range(MAX_PAGE_FETCHES):
        for path, headers, into in (
            (f"/runs/{run_id}", {}, page_ms),
            (f"/runs/{run_id}", {"HX-Request": "true"}, fragment_ms),
            ("/healthz", {}, floor_ms),
        ):
            t0 = time.perf_counter()
            r = w.dash.http.get(path, headers=headers)
            into.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200, r.text[:500]
        listed = w.dash.http.get("/api/v1/probes").json()
        status = next(x["status"] for x in listed if x["id"] == run_id)
        if status != "running" or time.monotonic() - started > 300:
            break
    run_s = time.monotonic() - started
    run = w.dash.wait_run(run_id, timeout=60)
    # The baseline: the same page and fragment once the run is over (they then also hold its strip).
    idle_page: list[float] = []
    idle_fragment: list[float] = []
    for _ in range(BASELINE_FETCHES):
        for headers, into in (({}, idle_page), ({"HX-Request": "true"}, idle_fragment)):
            t0 = time.perf_counter()
            assert w.dash.http.get(f"/runs/{run_id}", headers=headers).status_code == 200
            into.append((time.perf_counter() - t0) * 1000)
    page_p95, fragment_p95 = _p95(page_ms), _p95(fragment_ms)
    idle_page_p95, idle_fragment_p95 = _p95(idle_page), _p95(idle_fragment)
    floor_p95 = _p95(floor_ms)
    print(
        f"\n{BIG_RUN} requests in {run['elapsed_s']:.1f} s; {len(page_ms)} page fetches while running: "
        f"page p50 {statistics.median(page_ms):.0f} ms p95 {page_p95:.0f} ms, fragment p50 "
        f"{statistics.median(fragment_ms):.0f} ms p95 {fragment_p95:.0f} ms, /healthz p50 "
        f"{statistics.median(floor_ms):.0f} ms p95 {floor_p95:.0f} ms; after the run: page p95 "
        f"{idle_page_p95:.0f} ms, fragment p95 {idle_fragment_p95:.0f} ms; errors {run['errors']}"
    )
    assert run["status"] == "done" and run["done"] == BIG_RUN, (run["status"], run["done"], run["error"])
    assert run["errors"] == {} and run["attributed"] == BIG_RUN, (run["errors"], run["unattributed"])
    assert {p["pod"] for p in run["pods"] if p["hits"]} == set(w.pods), "10,000 requests reach every pod"
    assert run["routing"]["as_expected"] is True, run["routing"]
    assert len(page_ms) >= 10, f"only {len(page_ms)} page fetches while the run went ({run_s:.1f} s)"
    assert page_p95 <= RUNNING_RATIO * idle_page_p95, (page_p95, idle_page_p95)
    assert fragment_p95 <= RUNNING_RATIO * idle_fragment_p95, (fragment_p95, idle_fragment_p95)
    # The target, less what this machine charges any request at the same moments (/healthz,
    # which does nothing, through the same port-forward): on a quiet machine that is about the 200 ms
    # itself; on a loaded CI machine a bare 200 ms would measure the machine, not the page.
    assert page_p95 <= TARGET_MS + floor_p95, (page_p95, floor_p95)
    assert fragment_p95 <= TARGET_MS + floor_p95, (fragment_p95, floor_p95)
