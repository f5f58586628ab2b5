"""Attacks on the Kubernetes side, against the chart as users install it: the image from the Dockerfile, the
chart's ServiceAccount and RBAC (every write feature on, the test namespace the only writable one), reached
through ``kubectl port-forward``. The admin kubeconfig only arranges fixtures (hand-made EndpointSlices, a
hostile backend, a leftover pod) and reads what happened.

- the cluster's own namespaces are never written: kube-system/kube-dns and default/kubernetes refused even
  with rbac.patchServices, no exec there, no probe pod anywhere but the release namespace;
- hand-made EndpointSlices to the node (6443, the kubelet's 10250), its network and the pod gateway: refused
  with the reason;
- a probe-pod run whose endpoints switch to the node mid-run fails and its pod goes;
- a backend whose reply carries newlines, ``ERROR`` lines and records of its own gets one outcome per request;
- probe pods: owned by the dashboard pod, deadline capped, resources, results streamed with latency;
- a force-killed dashboard leaves no probe pod once its replacement runs (owner GC + the start-up reaper);
- the exec origin works under the chart's RBAC; an affinity change asks for confirmation and leaves an Event.
"""

from __future__ import annotations

import html
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from scripts import demo
from tests.chart.release import Release, custom_cluster_ip
from tests.e2e.conftest import Cluster, EchoApp, wait_for
from tests.e2e.dashboard import wait_serving
from tests.e2e.released import chart_release, forwarded

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

PROBE_SELECTOR = "app.kubernetes.io/managed-by=svcscope,app.kubernetes.io/component=probe"
TERMINAL = ("done", "cancelled", "failed", "timed_out")
RUN_DEADLINE_S = 900  # Settings.probe_run_deadline_s: no probe pod may be given longer


@pytest.fixture(scope="module")
def image(cluster: Cluster) -> str:
    demo.build_image()
    return demo.IMAGE


@pytest.fixture(scope="module")
def ns(cluster: Cluster) -> Iterator[str]:
    name = f"e2e-attack-kube-{uuid.uuid4().hex[:5]}"
    cluster.create_namespace(name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def release(cluster: Cluster, ns: str) -> Iterator[Release]:
    rel = chart_release(cluster, ns)
    rel.install(
        "demo.enabled=true",
        f"demo.customClusterIP={custom_cluster_ip()}",
        "rbac.patchServices=true",
        "rbac.probePods=true",
        "rbac.exec=true",
        f"rbac.writableNamespaces={{{ns}}}",
    )
    cluster.wait_for(
        lambda: len(cluster.ready_pods(ns, "app.kubernetes.io/name=svcscope-echo")) == 3,
        120,
        "demo echo pods",
    )
    yield rel
    rel.uninstall(wait=False)


def dashboard_pod(cluster: Cluster, rel: Release) -> dict[str, Any]:
    (pod,) = cluster.ready_pods(
        rel.namespace, f"app.kubernetes.io/name=svcscope,app.kubernetes.io/instance={rel.name}"
    )
    return pod


@pytest.fixture
def dash(cluster: Cluster, release: Release) -> Iterator[httpx.Client]:
    """The dashboard through `kubectl port-forward`, as the chart's ServiceAccount and nothing else."""
    pod = dashboard_pod(cluster, release)
    # The bar: the feature tests below run the installed release with the chart's own credentials.
    assert pod["spec"]["serviceAccountName"] == release.fullname
    (container,) = pod["spec"]["containers"]
    env = {e["name"] for e in container.get("env", [])}
    assert "SVCSCOPE_KUBECONFIG" not in env and "KUBECONFIG" not in env
    assert container["image"] == demo.IMAGE
    with forwarded(cluster, release) as client:
        yield client


def state_of(cluster: Cluster, ns: str) -> str:
    """The namespace's pods and the dashboard's log (this and the previous container), for a failure."""
    pods = cluster.kubectl("get", "pods", "-n", ns, "-o", "wide", check=False).stdout
    logs = ""
    for previous in ("", "--previous"):
        args = ["logs", "-n", ns, "-l", "app.kubernetes.io/name=svcscope", "--tail=40", previous]
        logs += cluster.kubectl(*[a for a in args if a], check=False).stdout
    return f"{pods}\n{logs}"


def start(dash: httpx.Client, **body: Any) -> str:
    r = dash.post("/api/v1/probes", json=body)
    assert r.status_code == 202, f"{r.status_code} {r.text}"
    return str(r.json()["id"])


def run_of(dash: httpx.Client, run_id: str) -> dict[str, Any]:
    r = dash.get(f"/api/v1/probes/{run_id}")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def finished(dash: httpx.Client, run_id: str, timeout: float = 180.0) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        run = run_of(dash, run_id)
        return run if run["status"] in TERMINAL else None

    return wait_for(ended, timeout, f"run {run_id} to end")


def probe_pods(cluster: Cluster, namespace: str | None = None) -> list[dict[str, Any]]:
    where = ["-n", namespace] if namespace else ["-A"]
    items: list[dict[str, Any]] = cluster.get("pods", *where, "-l", PROBE_SELECTOR)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def echo(ns: str, **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"namespace": ns, "service": "svcscope-echo", "port": "http", "concurrency": 1}
    body.update(kw)
    return body


# -- the cluster's own namespaces


def test_the_clusters_own_namespaces_are_never_written(
    cluster: Cluster, release: Release, dash: httpx.Client
) -> None:
    before = cluster.get("service", "kube-dns", "-n", "kube-system")["spec"]["sessionAffinity"]
    r = dash.post(
        "/api/v1/services/kube-system/kube-dns/session-affinity", json={"session_affinity": "ClientIP"}
    )
    assert r.status_code == 403 and "one of the cluster's own namespaces" in r.json()["detail"], r.text
    assert cluster.get("service", "kube-dns", "-n", "kube-system")["spec"]["sessionAffinity"] == before
    r = dash.post(
        "/api/v1/services/default/kubernetes/session-affinity", json={"session_affinity": "ClientIP"}
    )
    assert r.status_code == 403 and "apiserver's own Service" in r.json()["detail"], r.text
    # The page says why instead of offering the form.
    page = dash.get("/services/kube-system/kube-dns").text
    assert 'data-testid="affinity-form"' not in page and 'data-testid="affinity-refused"' in page
    assert "cluster's own namespaces" in html.unescape(page)
    # No exec into a kube-system pod: refused before anything is sent.
    coredns = cluster.get("pods", "-n", "kube-system", "-l", "k8s-app=kube-dns")["items"][0]["metadata"][
        "name"
    ]
    r = dash.post(
        "/api/v1/probes",
        json={"namespace": "kube-system", "service": "kube-dns", "port": "dns-tcp", "protocol": "TCP",
              "count": 1, "concurrency": 1, "origin": "exec", "exec_pod": coredns},
    )  # fmt: skip
    assert r.status_code == 403 and "kube-system" in r.json()["detail"], r.text
    # And the RBAC agrees: no write verb there for the ServiceAccount.
    for verb, resource, sub in (
        ("patch", "services", ""),
        ("create", "pods", ""),
        ("create", "pods", "exec"),
    ):
        assert not release.can_i(verb, resource, namespace="kube-system", subresource=sub)
    assert not probe_pods(cluster, "kube-system")


# -- hand-made endpoints


MANUAL = """
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  labels: {{kubernetes.io/service-name: {name}, endpointslice.kubernetes.io/managed-by: e2e.svcscope.io}}
addressType: IPv4
ports: [{{name: http, port: {port}, protocol: TCP}}]
endpoints: [{{addresses: ["{address}"], conditions: {{ready: true}}}}]
"""


def node_address(cluster: Cluster) -> str:
    (node,) = cluster.get("nodes")["items"]
    return str(next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"))


def pod_gateway(cluster: Cluster, ns: str) -> str:
    """The first address of the /24 the demo's pods are in (the bridge CNI's gateway on the node)."""
    ip = str(cluster.ready_pods(ns, "app.kubernetes.io/name=svcscope-echo")[0]["status"]["podIP"])
    return ip.rsplit(".", 1)[0] + ".1"


def test_endpoints_to_the_node_its_network_the_kubelet_and_the_gateway_are_refused(
    cluster: Cluster, release: Release, dash: httpx.Client, ns: str
) -> None:
    node = node_address(cluster)
    neighbour = node.rsplit(".", 1)[0] + ".254"  # the node's other link (towards the host and the apiserver)
    cases = [
        (pod_gateway(cluster, ns), 8080, "is a node's pod-network gateway"),
        (node, 6443, "is the Kubernetes apiserver"),
        (node, 10250, f"{node}:10250 is a node's kubelet"),
        (neighbour, 6443, f"is in the nodes' own network (next to node {node})"),
    ]
    for address, port, words in cases:
        cluster.apply(MANUAL.format(name="manual", address=address, port=port), namespace=ns)

        def refused(words: str = words) -> str | None:
            r = dash.post("/api/v1/probes", json=echo(ns, service="manual", count=1))
            if r.status_code == 202:  # the watch has not delivered the slice yet: nothing listens there
                return None
            assert r.status_code == 403, r.text
            detail = str(r.json()["detail"])
            return detail if words in detail else None

        try:
            detail = wait_for(refused, 30, f"{address}:{port} refused")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{state_of(cluster, ns)}") from None
        assert f"refusing to probe {ns}/manual: its endpoint {address}:{port}" in detail


def test_a_mid_run_switch_to_the_node_fails_a_probe_pod_run(
    cluster: Cluster, release: Release, dash: httpx.Client, ns: str
) -> None:
    backend = cluster.ready_pods(ns, "app.kubernetes.io/name=svcscope-echo")[0]["status"]["podIP"]
    cluster.apply(MANUAL.format(name="switch", address=backend, port=8080), namespace=ns)
    body = echo(ns, service="switch", count=5000, timeout_s=2, origin="probe-pod")
    run_id = wait_for(
        lambda: (r := dash.post("/api/v1/probes", json=body)).status_code == 202 and r.json()["id"],
        30,
        "the run to start on the hand-made endpoint",
    )
    wait_for(lambda: run_of(dash, run_id)["done"] >= 10, 120, "the probe pod's first outcomes")
    switched = time.monotonic()
    cluster.apply(MANUAL.format(name="switch", address=node_address(cluster), port=6443), namespace=ns)
    run = finished(dash, run_id, 60)
    print(f"\nmid-run switch: run failed {time.monotonic() - switched:.1f} s after the slice changed")
    assert run["status"] == "failed", run
    assert "stopped mid-run" in run["error"] and "apiserver" in run["error"], run["error"]
    assert run["done"] < 5000
    wait_for(lambda: not probe_pods(cluster, ns), 60, "the run's probe pod to be deleted")


# -- a hostile backend


HOSTILE = """
import http.server, json, os
name = os.environ["POD_NAME"]
forged = json.dumps({"seq": 2, "proto": "http", "identity": "svcscope-echo-x", "error": None, "status": 200,
                     "latency_ms": 1.0, "peer": None, "conn": 2, "truncated": False})
bodies = [json.dumps({"pod": name + "\\nERROR refused\\nsvcscope-echo-x\\n" + forged}).encode(),
          ("pod=forged-pod\\nERROR reset\\n" + forged + "\\n").encode()]
class Handler(http.server.BaseHTTPRequestHandler):
    served = 0
    def do_GET(self):
        body = bodies[Handler.served % 2]
        Handler.served += 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("", 8080), Handler).serve_forever()
"""


def hostile_manifest(image: str) -> str:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hostile", "labels": {"app": "hostile"}},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
            "containers": [
                {
                    "name": "hostile",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-c", HOSTILE],
                    "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                }
            ],
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "hostile"},
        "spec": {"selector": {"app": "hostile"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": [pod, service]})


def test_a_reply_forging_backend_gets_one_outcome_per_request(
    cluster: Cluster, release: Release, dash: httpx.Client, ns: str, image: str
) -> None:
    cluster.apply(hostile_manifest(image), namespace=ns)
    cluster.wait_for(lambda: cluster.ready_pods(ns, "app=hostile"), 90, "the hostile backend")
    wait_for(
        lambda: dash.get(f"/api/v1/services/{ns}/hostile").json()["service"]["endpoints_ready"] == 1,
        30,
        "the dashboard to see the hostile backend",
    )
    wait_serving(dash, echo(ns, service="hostile"), count=1)
    run = finished(dash, start(dash, **echo(ns, service="hostile", count=6, origin="probe-pod")))
    assert run["status"] == "done", run
    # Six requests, six outcomes: no forged error, no forged pod, nothing attributed to anyone.
    assert run["done"] == 6 and run["errors"] == {} and run["attributed"] == 0, run
    assert run["unattributed"]["count"] == 6


# -- probe pods


def test_probe_pods_are_owned_bounded_sized_and_stream_their_results(
    cluster: Cluster,
    release: Release,
    dash: httpx.Client,
    ns: str,
    namespace: str,
    deploy_echo: Callable[..., EchoApp],
) -> None:
    """A Service of another namespace: its probe pod still runs in the release namespace."""
    app = deploy_echo(namespace, replicas=2)
    wait_for(
        lambda: (
            dash.get(f"/api/v1/services/{namespace}/{app.name}").json()["service"]["endpoints_ready"] == 2
        ),
        60,
        "the dashboard to see the other namespace's Service",
    )
    count = 3000
    body = {"namespace": namespace, "service": app.name, "port": "http", "count": count, "concurrency": 1}
    wait_serving(dash, body, count=1)
    run_id = start(dash, **body, origin="probe-pod", timeout_s=30)
    (pod,) = wait_for(lambda: probe_pods(cluster, ns), 60, "the probe pod")
    assert not probe_pods(cluster, namespace) and not probe_pods(cluster, "kube-system")
    owner = dashboard_pod(cluster, release)["metadata"]
    assert pod["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": owner["name"], "uid": owner["uid"]}
    ]
    # count 3000 x timeout 30 s would be 90,005 s: capped by the run deadline.
    assert pod["spec"]["activeDeadlineSeconds"] <= RUN_DEADLINE_S + 30
    resources = pod["spec"]["containers"][0]["resources"]
    assert resources["limits"]["memory"] and resources["limits"]["cpu"] and resources["requests"]["memory"]
    # Results arrive while the client still runs.
    partial = wait_for(
        lambda: (r := run_of(dash, run_id))["status"] == "running" and 0 < r["done"] < count and r,
        120,
        "outcomes while the probe pod runs",
        interval=0.05,
    )
    run = finished(dash, run_id, 300)
    assert run["status"] == "done" and run["done"] == count and run["attributed"] == count, run
    p50 = run["latency_ms"]["p50"]
    print(f"\nprobe pod: {partial['done']}/{count} outcomes seen while it ran; p50 {p50} ms")
    assert partial["done"] < count and run["latency_ms"]["p50"] is not None
    wait_for(lambda: not probe_pods(cluster, ns), 60, "the probe pod to be deleted")


def test_exec_origin_works_under_the_charts_rbac(
    cluster: Cluster, release: Release, dash: httpx.Client, ns: str
) -> None:
    pod = cluster.ready_pods(ns, "app.kubernetes.io/name=svcscope-echo")[0]["metadata"]["name"]
    assert release.can_i("get", "pods", namespace=ns, subresource="exec")
    assert release.can_i("create", "pods", namespace=ns, subresource="exec")
    run = finished(dash, start(dash, **echo(ns, count=20, origin="exec", exec_pod=pod)))
    assert run["status"] == "done" and run["attributed"] == 20 and run["errors"] == {}, run
    assert run["latency_ms"]["p50"] is not None
    # Reuse from a pod: one keep-alive connection, one pod.
    run = finished(dash, start(dash, **echo(ns, count=30, origin="exec", exec_pod=pod, reuse=True)))
    assert [p["hits"] for p in run["pods"] if p["hits"]] == [30] and run["connections"] == 1, run
    r = dash.post("/api/v1/probes", json=echo(ns, count=1, origin="exec", exec_pod="nope"))
    assert r.status_code == 422 and "not a watched running pod" in r.json()["detail"], r.text


def test_affinity_change_asks_to_confirm_and_leaves_an_event(
    cluster: Cluster, release: Release, dash: httpx.Client, ns: str
) -> None:
    page = dash.get(f"/services/{ns}/svcscope-echo").text
    assert "Current: <code>None</code>" in page
    assert '<option value="None" selected>None (current)</option>' in page
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    form = f"/services/{ns}/svcscope-echo/session-affinity"
    data = {"csrf_token": token.group(1), "session_affinity": "ClientIP", "timeout_s": "77"}
    r = dash.post(form, data=data)
    assert r.status_code == 422 and "confirm the change" in r.text
    assert cluster.get("service", "svcscope-echo", "-n", ns)["spec"]["sessionAffinity"] == "None"
    r = dash.post(form, data={**data, "confirm": "yes"}, headers={"HX-Request": "true"})
    assert r.status_code == 200 and 'data-status="200"' in r.text, r.text
    assert "Current: <code>ClientIP</code>, timeout 77 s" in r.text and "None → ClientIP (77 s)" in r.text
    assert cluster.get("service", "svcscope-echo", "-n", ns)["spec"]["sessionAffinity"] == "ClientIP"

    def event() -> dict[str, Any] | None:
        items = cluster.get(
            "events",
            "-n",
            ns,
            "--field-selector",
            "involvedObject.kind=Service,involvedObject.name=svcscope-echo",
        )["items"]
        return next((e for e in items if e["reason"] == "SessionAffinityChanged"), None)

    recorded = wait_for(event, 30, "the Event on the Service")
    assert "None -> ClientIP (77 s)" in recorded["message"] and "client 127.0.0.1" in recorded["message"]

    def changed() -> str | None:
        text = dash.get(f"/services/{ns}/svcscope-echo").text
        return text if "Current: <code>ClientIP</code>" in text else None

    page = wait_for(changed, 30, "the watch to deliver the change")
    assert "None → ClientIP (77 s)" in page
    r = dash.post(f"/api/v1/services/{ns}/svcscope-echo/session-affinity", json={"session_affinity": "None"})
    assert r.status_code == 200, r.text


# -- a killed dashboard


LEFTOVER = """
apiVersion: v1
kind: Pod
metadata:
  name: svcscope-probe-leftover
  labels: {app.kubernetes.io/managed-by: svcscope, app.kubernetes.io/component: probe}
spec:
  restartPolicy: Never
  activeDeadlineSeconds: 600
  securityContext: {runAsNonRoot: true, runAsUser: 10001}
  containers:
    - name: probe
      image: %s
      imagePullPolicy: Never
      command: ["python3", "-c", "import time; time.sleep(600)"]
"""


def test_a_killed_dashboard_leaves_no_probe_pod(
    cluster: Cluster, release: Release, dash: httpx.Client, ns: str, image: str
) -> None:
    """Force-deleted mid-run (its containers are SIGKILLed): its probe pod goes with it (owner reference), and
    a probe pod a crashed predecessor left without an owner is deleted by the replacement at start-up."""
    cluster.apply(LEFTOVER % image, namespace=ns)
    run_id = start(dash, **echo(ns, count=5000, timeout_s=2, origin="probe-pod"))
    wait_for(lambda: run_of(dash, run_id)["done"] >= 10, 120, "the probe pod running")
    assert len(probe_pods(cluster, ns)) == 2
    old = dashboard_pod(cluster, release)["metadata"]["name"]
    killed = time.monotonic()
    cluster.kubectl("delete", "pod", old, "-n", ns, "--grace-period=0", "--force", "--wait=false")
    wait_for(
        lambda: [
            p
            for p in cluster.ready_pods(ns, "app.kubernetes.io/name=svcscope")
            if p["metadata"]["name"] != old
        ],
        120,
        "the replacement dashboard",
    )
    wait_for(lambda: not probe_pods(cluster, ns), 90, "no probe pod left")
    print(f"\nkilled dashboard: no probe pod left {time.monotonic() - killed:.1f} s after the kill")
