"""Probing on the real cluster: the dashboard probes Services from inside the node namespace and tells,
per request, which pod answered."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from app.web.security import Csrf
from tests.e2e.conftest import Cluster, EchoApp
from tests.e2e.dashboard import (
    LINK_ADDRESS,
    Dashboard,
    deployed,
    hits,
    probe_body,
    start_dashboard,
    wait_serving,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

ERROR_KINDS = {"refused", "reset", "timeout", "closed", "no_endpoints", "unreachable", "bad_response"}


@pytest.fixture(scope="module")
def dashboard(cluster: Cluster) -> Iterator[Dashboard]:
    dash = start_dashboard()
    yield dash
    dash.stop()


def test_new_connections_spread_uniformly(
    dashboard: Dashboard, deploy_echo: Callable[..., EchoApp], namespace: str
) -> None:
    app = deployed(deploy_echo, dashboard, namespace)
    run = dashboard.probe(**probe_body(app, count=600, concurrency=8))
    assert run["status"] == "done", run
    assert run["done"] == 600 and run["errors"] == {} and run["unattributed"]["count"] == 0
    counts = hits(run)
    assert len(counts) == 3 and all(n > 0 for n in counts.values()), counts
    assert run["chi_square"]["p_value"] >= 0.001, run["verdict"]
    assert "consistent with a uniform spread" in run["verdict"]
    assert run["attribution"]["mode"] == "auto"
    assert all(p["expected_share"] == pytest.approx(1 / 3, abs=1e-5) for p in run["pods"])
    assert all(p["latency_ms"]["p50"] is not None for p in run["pods"])
    csv = dashboard.http.get(f"/api/v1/probes/{run['id']}.csv")
    assert len(csv.text.strip().splitlines()) == 601
    page = dashboard.http.get(f"/runs/{run['id']}")
    assert page.status_code == 200 and page.text.count('title="#') == 600


def test_client_ip_affinity_one_pod(
    dashboard: Dashboard, deploy_echo: Callable[..., EchoApp], namespace: str
) -> None:
    app = deployed(deploy_echo, dashboard, namespace, service_spec="sessionAffinity: ClientIP\n")
    run = dashboard.probe(**probe_body(app, count=200, concurrency=8))
    counts = {p: n for p, n in hits(run).items() if n}
    assert list(counts.values()) == [200], counts
    (pod,) = counts
    assert run["verdict"] == f"all 200 hits on pod {pod}: consistent with ClientIP affinity; timeout 10800 s"


def test_reuse_one_connection_one_pod(
    dashboard: Dashboard, deploy_echo: Callable[..., EchoApp], namespace: str
) -> None:
    app = deployed(deploy_echo, dashboard, namespace)
    run = dashboard.probe(**probe_body(app, count=200, concurrency=1, reuse=True))
    counts = {p: n for p, n in hits(run).items() if n}
    assert list(counts.values()) == [200], counts
    assert run["connections"] == 1
    assert "one reused connection" in run["verdict"]
    assert any("balances connections, not requests" in e for e in run["explanations"])
    page = dashboard.http.get(f"/runs/{run['id']}")
    assert "balances connections, not requests" in page.text


def test_scale_up_mid_run_shows_new_pods(
    cluster: Cluster, dashboard: Dashboard, deploy_echo: Callable[..., EchoApp], namespace: str
) -> None:
    app = deployed(deploy_echo, dashboard, namespace)
    run_id = dashboard.start(**probe_body(app, count=10_000, concurrency=2, timeout_s=1.0))
    cluster.wait_for(lambda: dashboard.run(run_id)["done"] >= 50, 30, "the run to be under way")
    cluster.kubectl("scale", "deployment", app.name, "-n", namespace, "--replicas=5")

    def five_pods_answered() -> bool:
        run = dashboard.run(run_id)
        assert run["status"] == "running", f"run ended before the new pods answered: {hits(run)}"
        return sum(1 for n in hits(run).values() if n > 0) == 5

    cluster.wait_for(five_pods_answered, 90, "the two new pods to answer in the running run")
    # A JSON body is what lets an API client through the CSRF check (a browser cannot send one cross-site).
    cancel = dashboard.http.post(f"/api/v1/probes/{run_id}/cancel", json={})
    assert cancel.status_code == 202, cancel.text
    run = dashboard.wait_run(run_id)
    assert run["status"] in ("cancelled", "done") and run["endpoints_changed"]
    assert len([p for p in run["pods"] if p["hits"]]) == 5
    assert all(p["expected_share"] == pytest.approx(0.2, abs=1e-5) for p in run["pods"])


def test_delete_pod_mid_run_nothing_lost(
    cluster: Cluster, dashboard: Dashboard, deploy_echo: Callable[..., EchoApp], namespace: str
) -> None:
    app = deployed(deploy_echo, dashboard, namespace)
    count = 4000
    run_id = dashboard.start(**probe_body(app, count=count, concurrency=4, timeout_s=1.0))
    cluster.wait_for(lambda: dashboard.run(run_id)["done"] >= 100, 30, "the run to be under way")
    victim = cluster.ready_pods(namespace, app.selector)[0]["metadata"]["name"]
    cluster.kubectl("delete", "pod", victim, "-n", namespace, "--grace-period=0", "--force", "--wait=false")
    run = dashboard.wait_run(run_id, timeout=300)
    assert run["status"] == "done", run["error"]
    # Nothing lost: every request is a hit, an unattributed reply or an error of a named kind.
    assert run["done"] == count and len(run["sequence"]) == count
    total = sum(hits(run).values()) + run["unattributed"]["count"] + sum(run["errors"].values())
    assert total == count
    assert set(run["errors"]) <= ERROR_KINDS, run["errors"]
    gone = next(p for p in run["pods"] if p["pod"] == victim)
    assert gone["hits"] > 0 and not gone["current"]
    print(f"\ndelete mid-run: errors by kind {run['errors']}, hits {hits(run)}")


def test_multi_port_each_named_port(
    dashboard: Dashboard, deploy_echo: Callable[..., EchoApp], namespace: str
) -> None:
    app = deployed(deploy_echo, dashboard, namespace)
    for port, protocol in (("http", "HTTP"), ("tcp", "TCP"), ("udp", "UDP"), ("9000", "TCP")):
        run = dashboard.probe(**probe_body(app, port=port, protocol=protocol, count=90, concurrency=3))
        assert run["status"] == "done" and run["errors"] == {}, (port, run["errors"])
        assert run["attributed"] == 90, (port, run["unattributed"])
        assert sum(1 for n in hits(run).values() if n) == 3, (port, hits(run))
        assert run["target"]["protocol"] == protocol
    refused = dashboard.http.post("/api/v1/probes", json=probe_body(app, port="udp", protocol="TCP"))
    assert refused.status_code == 422 and "UDP" in refused.text


def test_fingerprint_attribution(
    dashboard: Dashboard, deploy_echo: Callable[..., EchoApp], namespace: str
) -> None:
    app = deployed(deploy_echo, dashboard, namespace, env={"ECHO_MODE": "anonymous"})
    for port, protocol in (("http", "HTTP"), ("tcp", "TCP")):
        run = dashboard.probe(**probe_body(app, port=port, protocol=protocol, count=150, concurrency=4))
        assert run["attribution"]["mode"] == "fingerprint", run["attribution"]
        assert run["attributed"] == 150 and run["unattributed"]["count"] == 0
        assert sum(1 for n in hits(run).values() if n) == 3, (
            port,
            hits(run),
            run["samples"],
            run["attribution"],
        )


def test_identical_replies_unattributable(
    dashboard: Dashboard, deploy_echo: Callable[..., EchoApp], namespace: str
) -> None:
    app = deployed(deploy_echo, dashboard, namespace, env={"ECHO_MODE": "identical"})
    run = dashboard.probe(**probe_body(app, count=100, concurrency=4))
    assert run["attribution"]["mode"] == "none" and "identical" in run["attribution"]["note"]
    assert run["attributed"] == 0 and run["unattributed"]["count"] == 100
    assert all(p["hits"] == 0 for p in run["pods"])
    assert "identical" in run["unattributed"]["reasons"][0]["reason"]
    assert "none could be attributed" in run["verdict"]


REDIRECTOR = """\
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(302)
        self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
        self.send_header("Content-Length", "0")
        self.end_headers()
http.server.HTTPServer(("", 8080), H).serve_forever()
"""


def test_ssrf_attempts_refused(cluster: Cluster, dashboard: Dashboard, namespace: str) -> None:
    post = dashboard.http.post
    # The apiserver, by name.
    r = post(
        "/api/v1/probes",
        json={"namespace": "default", "service": "kubernetes", "port": "https", "protocol": "TCP"},
    )
    assert r.status_code == 403 and "apiserver" in r.text
    # An address instead of a Service: not part of the API.
    r = post(
        "/api/v1/probes",
        json={"namespace": namespace, "service": "x", "port": 80, "address": "169.254.169.254"},
    )
    assert r.status_code == 422
    # An unwatched/unknown Service.
    r = post("/api/v1/probes", json={"namespace": namespace, "service": "nope", "port": 80})
    assert r.status_code == 404
    # A selector-less Service whose hand-made endpoint is the apiserver (the node IP :6443).
    apiserver_ep = cluster.get(
        "endpointslices", "-n", "default", "-l", "kubernetes.io/service-name=kubernetes"
    )
    node_ip = apiserver_ep["items"][0]["endpoints"][0]["addresses"][0]
    cluster.apply(
        f"""\
        apiVersion: v1
        kind: Service
        metadata: {{name: detour}}
        spec:
          ports: [{{name: https, port: 443, targetPort: 6443}}]
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: detour-1
          labels: {{kubernetes.io/service-name: detour}}
        addressType: IPv4
        ports: [{{name: https, port: 6443, protocol: TCP}}]
        endpoints: [{{addresses: ["{node_ip}"]}}]
        """,
        namespace,
    )

    def detour_refused() -> bool:
        r = post(
            "/api/v1/probes",
            json={"namespace": namespace, "service": "detour", "port": "https", "protocol": "TCP"},
        )
        assert r.status_code in (403, 404), r.text
        return r.status_code == 403 and "apiserver" in r.text

    cluster.wait_for(detour_refused, 30, "the apiserver detour to be refused")
    # A backend that redirects to the metadata address: reported as a 302, never followed.
    cluster.apply(
        f"""\
        apiVersion: v1
        kind: Pod
        metadata: {{name: redirector, labels: {{app: redirector}}}}
        spec:
          terminationGracePeriodSeconds: 0
          containers:
            - name: r
              image: localhost/svcscope-echo:dev
              imagePullPolicy: Never
              command: [python3, -c, {json.dumps(REDIRECTOR)}]
              ports: [{{name: http, containerPort: 8080}}]
              readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
        ---
        apiVersion: v1
        kind: Service
        metadata: {{name: redirector}}
        spec:
          selector: {{app: redirector}}
          ports: [{{name: http, port: 80, targetPort: http}}]
        """,
        namespace,
    )
    dashboard.wait_endpoints(namespace, "redirector", 1, timeout=90)
    redirector: dict[str, Any] = {"namespace": namespace, "service": "redirector", "port": "http"}
    wait_serving(dashboard, redirector)
    run = dashboard.probe(**redirector, count=5, concurrency=1)
    assert run["status"] == "done" and run["errors"] == {} and run["done"] == 5
    assert hits(run) == {"redirector": 5}  # no name in a bare 302: the only pod, by fingerprint
    sample = next(iter(run["samples"].values()))
    assert sample.startswith("302")


def test_csrf_and_host_attacks_refused(dashboard: Dashboard) -> None:
    body = {"namespace": "default", "service": "x", "port": "80"}
    base = dashboard.base_url
    with httpx.Client(base_url=base, timeout=10) as c:
        assert c.post("/probes", data=body).status_code == 403  # form without CSRF token
        assert c.post("/probes", data={**body, "csrf_token": "forged.token"}).status_code == 403
        r = c.post("/api/v1/probes", json=body, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403
        r = c.post("/api/v1/probes", content=b"{}", headers={"Content-Type": "text/plain"})
        assert r.status_code == 403
        # DNS rebinding: the right address, a foreign Host name.
        r = c.post("/api/v1/probes", json=body, headers={"Host": "rebind.evil.example"})
        assert r.status_code == 400
        assert c.get("/api/v1/probes", headers={"Host": "rebind.evil.example"}).status_code == 400
    # A token minted with another secret is refused too, even next to the right cookie.
    with httpx.Client(base_url=base, timeout=10) as c:
        assert c.get("/api/v1/csrf").status_code == 200  # sets the cookie
        (nonce,) = c.cookies.values()
        r = c.post("/probes", data={**body, "csrf_token": Csrf("not-the-secret").token(nonce)})
        assert r.status_code == 403 and r.json()["csrf"] == "invalid"
    assert LINK_ADDRESS in base


def test_live_stream_delivers_every_result(
    dashboard: Dashboard, deploy_echo: Callable[..., EchoApp], namespace: str
) -> None:
    app = deployed(deploy_echo, dashboard, namespace)
    t0 = time.monotonic()
    run_id = dashboard.start(**probe_body(app, count=2000, concurrency=4))
    cells = 0
    final_cells = 0  # the closing "done" block carries the whole (bounded) strip
    first_hit_s: float | None = None
    events: list[str] = []
    with (
        httpx.Client(base_url=dashboard.base_url, timeout=60) as c,
        c.stream("GET", f"/runs/{run_id}/stream") as s,
    ):
        event = ""
        for line in s.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
                events.append(event)
            elif line.startswith("data: ") and event == "strip":
                n = line.count('title="#')
                if n and first_hit_s is None:
                    first_hit_s = time.monotonic() - t0
                cells += n
            elif line.startswith("data: ") and event == "done":
                final_cells += line.count('title="#')
            if event == "done" and line == "":
                break
            if len(events) > 20_000:
                raise AssertionError("stream did not end")
    # Results arrive live as strip cells while the stream keeps up; whatever it had not sent when the run
    # ended comes in the final block, which holds every request's cell.
    assert 0 < cells <= 2000 and events[-1] == "done", (cells, events[-3:])
    assert final_cells == 2000, final_cells
    assert first_hit_s is not None and first_hit_s < 5.0
    print(f"\nstream: {len(events)} events, first hit after {first_hit_s * 1000:.0f} ms")
