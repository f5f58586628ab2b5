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
from tests.e2e.conftest import Cluster

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
    assert r.headers["referrer-policy"] == "no-referrer"


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
