"""Attacks on the web layer, against the installed chart, through
`kubectl port-forward`, as a user runs it: the image of the Dockerfile, the chart's own args and
ServiceAccount, the pod's 384 Mi memory limit.

- a 100 MB body (declared, and chunked) is refused with 413, and the container's RSS (from /metrics,
  process_resident_memory_bytes) grows by less than 50 MB;
- a 200 KiB URL (and 200 KiB of headers) gets 414 (431), and the *same* port-forward still answers
  /healthz afterwards — stock uvicorn reset the connection, and kubectl exited "lost connection to pod";
- every answer carries the framing / sniffing / referrer headers and the Content-Security-Policy;
- an unsafe request from another port of localhost, or another scheme, is refused.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from scripts import demo
from tests.chart.release import Release, port_forward
from tests.e2e.conftest import ECHO_IMAGE, Cluster

pytestmark = pytest.mark.e2e

MB = 1024 * 1024
RSS_GROWTH_MAX = 50 * MB


@dataclass
class Forwarded:
    release: Release
    base_url: str
    port: int
    http: httpx.Client


@pytest.fixture(scope="module")
def dashboard(cluster: Cluster) -> Iterator[Forwarded]:
    """The chart (defaults) in a namespace of its own, and one port-forward for the whole module: every test
    also shows that the tunnel survived the attacks of the tests before it."""
    demo.build_image()
    namespace = f"e2e-attack-web-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", namespace)
    rel = Release(
        namespace=namespace,
        kubectl=cluster.kubectl,
        helm_base=[str(cluster.bin_dir / "helm"), "--kubeconfig", str(cluster.kubeconfig)],
    )
    kubectl = [str(cluster.bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}"]
    try:
        rel.install()
        with (
            port_forward(kubectl, namespace, rel.fullname) as url,
            httpx.Client(base_url=url, timeout=30) as http,
        ):
            yield Forwarded(rel, url, int(url.rsplit(":", 1)[1]), http)
    finally:
        rel.uninstall(wait=False)
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def rss(http: httpx.Client) -> float:
    text = http.get("/metrics").text
    return float(
        next(line.split()[1] for line in text.splitlines() if line.startswith("process_resident_memory"))
    )


def assert_tunnel_alive(d: Forwarded) -> None:
    with httpx.Client(base_url=d.base_url, timeout=10) as fresh:  # a new connection through the same tunnel
        r = fresh.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def body_chunks(total: int, chunk: int = MB) -> Iterator[bytes]:
    block = b" " * chunk
    for _ in range(total // chunk):
        yield block


def test_100_mb_body_refused_without_rss_growth(dashboard: Forwarded) -> None:
    d = dashboard
    before = rss(d.http)
    size = 100 * MB
    # Declared: refused from the Content-Length alone (the server then reads and drops the rest).
    started = time.monotonic()
    r = d.http.post(
        "/api/v1/probes",
        content=body_chunks(size),
        headers={"content-type": "application/json", "content-length": str(size)},
        timeout=120,
    )
    assert r.status_code == 413, r.text
    assert "request body too large" in r.json()["detail"] and "Content-Length 104857600" in r.json()["detail"]
    # Chunked (no Content-Length): counted as it streams, refused past the cap.
    r = d.http.post(
        "/api/v1/probes", content=body_chunks(size), headers={"content-type": "application/json"}, timeout=120
    )
    assert r.status_code == 413 and "request body too large" in r.json()["detail"]
    # A form, too (it has no Content-Length cap of its own in the browser).
    r = d.http.post(
        "/probes", content=body_chunks(10 * MB), headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 413
    took = time.monotonic() - started
    after = rss(d.http)
    print(
        f"RSS {before / MB:.1f} MB before, {after / MB:.1f} MB after 210 MB of refused bodies ({took:.1f} s)"
    )
    assert after - before < RSS_GROWTH_MAX, (
        f"RSS grew {(after - before) / MB:.1f} MB ({before / MB:.0f} -> {after / MB:.0f})"
    )
    pods = d.release.kubectl("get", "pods", "-n", d.release.namespace, "-o", "json").stdout
    for pod in json.loads(pods)["items"]:
        for status in pod["status"].get("containerStatuses", []):
            assert status["restartCount"] == 0, (
                f"{pod['metadata']['name']} restarted (OOM?) after {took:.0f} s"
            )
    assert_tunnel_alive(d)


def send_in_pieces(sock: socket.socket, data: bytes, piece: int = 16 * 1024) -> None:
    for i in range(0, len(data), piece):
        sock.sendall(data[i : i + piece])
        time.sleep(0.002)  # a browser's request arrives in segments: the server sees the head grow


def raw_exchange(port: int, request: bytes) -> bytes:
    """Send a request in pieces, read until the server closes; a reset fails the test."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        send_in_pieces(sock, request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data:
                head, _, body = data.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    None,
                )
                if length is not None and len(body) >= length:
                    break
    return data


@pytest.mark.parametrize(
    ("what", "request_bytes", "status"),
    [
        ("200 KiB URL", b"GET /?q=" + b"a" * 200 * 1024 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 414),
        ("20 KiB URL", b"GET /?q=" + b"a" * 20 * 1024 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 414),
        (
            "200 KiB header",
            b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 200 * 1024 + b"\r\n\r\n",
            431,
        ),
    ],
)
def test_long_url_or_headers_leave_the_port_forward_alive(
    dashboard: Forwarded, what: str, request_bytes: bytes, status: int
) -> None:
    d = dashboard
    data = raw_exchange(d.port, request_bytes)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), f"{what}: {head[:200]!r}"
    assert b"x-frame-options: DENY" in head
    detail = json.loads(body)["detail"]
    assert ("URL too long" if status == 414 else "request headers too large") in detail
    time.sleep(0.5)  # an error on the tunnel makes kubectl exit at once; give it the chance to
    assert_tunnel_alive(d)


@pytest.mark.parametrize(
    "path", ["/", "/static/svcscope.js", "/api/v1/services", "/nowhere", "/metrics", "/api/v1/csrf"]
)
def test_hardening_headers_on_every_answer(dashboard: Forwarded, path: str) -> None:
    r = dashboard.http.get(path)
    assert r.status_code in (200, 404), r.text
    csp = r.headers["content-security-policy"]
    for directive in (
        "default-src 'self'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ):
        assert directive in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "same-origin"


@pytest.mark.parametrize("origin", ["http://localhost:9999", "https://127.0.0.1:1", "https://{self}", "null"])
def test_cross_origin_posts_refused(dashboard: Forwarded, origin: str) -> None:
    d = dashboard
    origin = origin.format(self=d.base_url.removeprefix("http://"))
    body = {"namespace": d.release.namespace, "service": "nope", "port": 80}
    r = d.http.post("/api/v1/probes", json=body, headers={"origin": origin})
    assert r.status_code == 403 and "cross-origin request refused" in r.json()["detail"]
    own = d.http.post("/api/v1/probes", json=body, headers={"origin": d.base_url})
    assert own.status_code == 404, own.text  # through the gate: the Service does not exist


def test_csrf_token_is_bound_to_an_http_only_strict_cookie(dashboard: Forwarded) -> None:
    d = dashboard
    with httpx.Client(base_url=d.base_url, timeout=10) as browser:
        r = browser.get("/api/v1/csrf")
        cookie = r.headers["set-cookie"]
        assert f"svcscope_csrf_{d.port}=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        token = r.json()["token"]
        form = {"namespace": d.release.namespace, "service": "nope", "port": "80"}
        ok = browser.post("/probes", data=form, headers={"x-csrf-token": token})
        assert ok.status_code == 404  # through the gate
    with httpx.Client(base_url=d.base_url, timeout=10) as attacker:  # the token without its cookie
        stolen = attacker.post("/probes", data=form, headers={"x-csrf-token": token})
    assert stolen.status_code == 403 and stolen.json()["csrf"] == "no-cookie"


def test_metrics_has_the_process_collector(dashboard: Forwarded) -> None:
    text = dashboard.http.get("/metrics").text
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds"):
        assert f"\n{name} " in text, name
    assert rss(dashboard.http) > 10 * MB


def test_the_one_port_forward_survived_the_module(dashboard: Forwarded) -> None:
    """Last: the tunnel that every attack above went through still works."""
    assert_tunnel_alive(dashboard)


# A backend whose every reply is the worst case for the rule below: with a backtracking engine, matching
# `(a+)+$` against 16,000 "a"s and a "!" never finishes, and the dashboard froze while it tried.
EVIL_BACKEND = """
import http.server
BODY = b"a" * 16000 + b"!"
class Evil(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("", 8080), Evil).serve_forever()
"""
REDOS_RULE = "regex:(a+)+$"
PAGE_P50_MAX_S = 0.1  # the list page while the run goes (a few ms normally, 12 s when a rule froze the loop)
PAGE_MAX_S = 1.0


def test_a_redos_identity_rule_leaves_the_dashboard_responsive(
    dashboard: Forwarded, cluster: Cluster
) -> None:
    ns = dashboard.release.namespace
    name = "evil"
    cluster.apply(
        f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
        - name: evil
          image: {ECHO_IMAGE}
          imagePullPolicy: Never
          command: ["python3", "-c", {json.dumps(EVIL_BACKEND)}]
          ports: [{{name: http, containerPort: 8080}}]
          readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: http}}]
""",
        namespace=ns,
    )

    def serving() -> bool:
        r = dashboard.http.get(f"/api/v1/services/{ns}/{name}")
        endpoints = r.json().get("endpoints", []) if r.status_code == 200 else []
        return any(e["pod"] and e["conditions"].get("ready") is not False for e in endpoints)

    cluster.wait_for(lambda: cluster.ready_pods(ns, f"app={name}"), 120, "the evil backend to be ready")
    cluster.wait_for(serving, 60, "the dashboard to see the evil backend's endpoint")
    body = {"namespace": ns, "service": name, "port": "http", "protocol": "HTTP", "count": 200,
            "concurrency": 4, "timeout_s": 2.0, "identity": REDOS_RULE}  # fmt: skip
    started = dashboard.http.post("/api/v1/probes", json=body)
    assert started.status_code == 202, started.text
    run_id = started.json()["id"]

    timings: list[float] = []
    deadline = time.monotonic() + 120
    run: dict[str, object] = {"status": "running"}
    while run["status"] == "running" and len(timings) < 200 and time.monotonic() < deadline:
        t0 = time.monotonic()
        assert dashboard.http.get("/").status_code == 200
        timings.append(time.monotonic() - t0)
        run = dashboard.http.get(f"/api/v1/probes/{run_id}").json()
    while run["status"] == "running" and time.monotonic() < deadline:
        run = dashboard.http.get(f"/api/v1/probes/{run_id}").json()
    assert run["status"] == "done", run
    # The first requests may meet a Service that kube-proxy has not programmed yet (refused, timed out);
    # every reply that came back reached the rule and matched nothing: unattributed, never a crash.
    errors = run["errors"]
    assert isinstance(errors, dict) and set(errors) <= {"refused", "timeout"}, errors
    replies = 200 - sum(errors.values())
    unattributed = run["unattributed"]
    assert run["done"] == 200 and replies >= 100, (replies, errors)
    assert isinstance(unattributed, dict) and unattributed["count"] == replies, unattributed
    timings.sort()
    assert timings, "the run ended before the page could be timed"
    p50 = timings[len(timings) // 2]
    print(f"\nGET / while a ReDoS rule runs: {len(timings)} pages, p50 {p50 * 1000:.1f} ms, "
          f"max {timings[-1] * 1000:.1f} ms")  # fmt: skip
    assert p50 < PAGE_P50_MAX_S and timings[-1] < PAGE_MAX_S, timings
    assert_tunnel_alive(dashboard)
