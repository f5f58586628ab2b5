"""The probe API, pages and stream on a real app with a pre-filled cache and loopback backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.kube.cache import ServiceCache
from app.main import create_app
from app.probe.runner import ProbeRunner
from tests.unit.fakes import Cluster, L4Balancer, limits, make_cluster
from tests.unit.web.csrf import atoken

pytestmark = pytest.mark.timeout(30)
SECRET = "test-secret"


def filled_cache(cluster: Cluster) -> ServiceCache:
    cache = ServiceCache()
    for svc in cluster.view.services.values():
        cache.upsert_service(svc)
    for slices in cluster.view.slices.values():
        for es in slices:
            cache.upsert_slice(es)
    for pod in cluster.view.pods.values():
        cache.upsert_pod(pod)
    return cache


@pytest.fixture
async def client() -> AsyncIterator[tuple[httpx.AsyncClient, Cluster]]:
    async for cluster in make_cluster(3):
        cache = filled_cache(cluster)
        app = create_app(Settings(csrf_secret=SECRET, sse_coalesce_s=0.05), cache=cache, start_watchers=False)
        async with app.router.lifespan_context(app):
            app.state.svc.probe_runner = ProbeRunner(cache, limits(), dial=cluster.dial)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
                yield c, cluster
            await app.state.svc.probe_runner.aclose()


BODY = {"namespace": "demo", "service": "web", "port": "http", "count": 30, "concurrency": 3}


async def wait_done(c: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    for _ in range(400):  # bounded: 400 polls, each yielding to the run
        r = await c.get(f"/api/v1/probes/{run_id}")
        data: dict[str, Any] = r.json()
        if data["status"] != "running":
            return data
        await asyncio.sleep(0.01)
    raise AssertionError("run did not finish")


async def test_api_run_json_and_csv(client: tuple[httpx.AsyncClient, Cluster]) -> None:
    c, _ = client
    r = await c.post("/api/v1/probes", json=BODY)
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]
    data = await wait_done(c, run_id)
    assert data["status"] == "done" and data["done"] == 30
    assert {p["pod"]: p["hits"] for p in data["pods"]} == {"web-0": 10, "web-1": 10, "web-2": 10}
    pod = data["pods"][0]
    assert pod["expected_share"] == pytest.approx(1 / 3, abs=1e-6) and pod["ip"] == "198.18.0.10"
    assert set(pod["latency_ms"]) == {"p50", "p95"}
    assert len(data["sequence"]) == 30 and data["errors"] == {} and data["unattributed"]["count"] == 0
    assert "uniform" in data["verdict"]
    csv = await c.get(f"/api/v1/probes/{run_id}.csv")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.strip().splitlines()
    assert lines[0].startswith("seq,at_ms,connection,pod") and len(lines) == 31
    listing = await c.get("/api/v1/probes")
    assert [r["id"] for r in listing.json()] == [run_id]


async def test_run_page_and_stream(client: tuple[httpx.AsyncClient, Cluster]) -> None:
    c, _ = client
    run_id = (await c.post("/api/v1/probes", json=BODY)).json()["id"]
    await wait_done(c, run_id)
    page = await c.get(f"/runs/{run_id}")
    assert page.status_code == 200 and "web-1" in page.text and "sse-connect" not in page.text
    assert page.text.count('title="#') == 30
    stream = await c.get(f"/runs/{run_id}/stream")
    assert stream.headers["content-type"].startswith("text/event-stream")
    events = [line for line in stream.text.splitlines() if line.startswith("event:")]
    # A finished run's stream sends the final block at once (it replaces the live one, strip included).
    assert events == ["event: done"]
    assert stream.text.count('title="#') == 30


async def test_html_body_is_escaped() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b"<script>alert(1)</script> web-0"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        async for cluster in make_cluster(1):
            cluster.routes[("198.19.0.50", 80)] = ("127.0.0.1", server.sockets[0].getsockname()[1])
            cache = filled_cache(cluster)
            app = create_app(Settings(csrf_secret=SECRET), cache=cache, start_watchers=False)
            async with app.router.lifespan_context(app):
                runner = ProbeRunner(cache, limits(), dial=cluster.dial)
                app.state.svc.probe_runner = runner
                async with httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://localhost"
                ) as c:
                    run_id = (await c.post("/api/v1/probes", json={**BODY, "count": 2})).json()["id"]
                    await wait_done(c, run_id)
                    page = await c.get(f"/runs/{run_id}")
                await runner.aclose()
            assert "<script>alert(1)</script>" not in page.text
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    finally:
        server.close()


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({**BODY, "service": "nope"}, 404, "not known"),
        ({**BODY, "port": "nope"}, 422, "no port named"),
        ({**BODY, "port": 9001}, 422, "is UDP"),
        (
            {**BODY, "namespace": "default", "service": "kubernetes", "port": "https", "protocol": "TCP"},
            403,
            "apiserver",
        ),
        ({**BODY, "count": 0}, 422, "count"),
        ({**BODY, "count": 10_001}, 422, "count"),
        ({**BODY, "concurrency": 300}, 422, "concurrency"),
        ({**BODY, "path": "http://169.254.169.254/latest/meta-data"}, 422, "single '/'"),
        ({**BODY, "path": "//169.254.169.254/"}, 422, "single '/'"),
        ({**BODY, "address": "169.254.169.254"}, 422, "address"),
        ({**BODY, "identity": "xpath:/x"}, 422, "identity"),
        ({**BODY, "protocol": "ICMP"}, 422, "protocol"),
        ({**BODY, "namespace": "../etc"}, 422, "namespace"),
    ],
)
async def test_api_refusals(
    client: tuple[httpx.AsyncClient, Cluster], body: dict[str, Any], status: int, message: str
) -> None:
    c, _ = client
    r = await c.post("/api/v1/probes", json=body)
    assert r.status_code == status, r.text
    assert message in r.text


async def test_unknown_run_is_404(client: tuple[httpx.AsyncClient, Cluster]) -> None:
    c, _ = client
    assert (await c.get("/api/v1/probes/000000000000")).status_code == 404
    assert (await c.get("/api/v1/probes/not-an-id")).status_code == 422
    assert (await c.get("/runs/000000000000")).status_code == 404


async def test_csrf_origin_and_host(client: tuple[httpx.AsyncClient, Cluster]) -> None:
    c, _ = client
    form = {k: str(v) for k, v in BODY.items()}
    assert (await c.post("/probes", data=form)).status_code == 403  # no token
    assert (await c.post("/probes", data={**form, "csrf_token": "x.y"})).status_code == 403
    evil = await c.post("/api/v1/probes", json=BODY, headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403
    rebinding = await c.post("/api/v1/probes", json=BODY, headers={"Host": "evil.example:8080"})
    assert rebinding.status_code == 400
    text_plain = await c.post("/api/v1/probes", content=b"{}", headers={"Content-Type": "text/plain"})
    assert text_plain.status_code == 403
    assert not (await c.get("/api/v1/probes")).json()  # none of them started a run


async def test_form_posts(client: tuple[httpx.AsyncClient, Cluster]) -> None:
    c, _ = client
    token = await atoken(c)
    form = {**{k: str(v) for k, v in BODY.items()}, "csrf_token": token, "reuse": "false", "identity": ""}
    plain = await c.post("/probes", data=form)
    assert plain.status_code == 303 and plain.headers["location"].startswith("/runs/")
    htmx = await c.post("/probes", data=form, headers={"HX-Request": "true", "X-CSRF-Token": token})
    assert htmx.status_code == 202 and 'class="probe-run card"' in htmx.text
    bad = await c.post(
        "/probes", data={**form, "port": "nope"}, headers={"HX-Request": "true", "X-CSRF-Token": token}
    )
    assert bad.status_code == 200 and 'data-status="422"' in bad.text and "no port named" in bad.text
    page = await c.get("/probes/new", params={"namespace": "demo", "service": "web"})
    assert page.status_code == 200 and 'name="csrf_token"' in page.text and "http:80→http/TCP" in page.text


def test_l4_balancer_is_a_test_double() -> None:
    assert L4Balancer([1]).backends == [1]


async def test_live_page_and_cancel(client: tuple[httpx.AsyncClient, Cluster]) -> None:
    c, _ = client
    run_id = (await c.post("/api/v1/probes", json={**BODY, "count": 10_000, "concurrency": 1})).json()["id"]
    page = await c.get(f"/runs/{run_id}")
    assert f'sse-connect="/runs/{run_id}/stream"' in page.text and 'name="csrf_token" value="' in page.text
    r = await c.post(f"/api/v1/probes/{run_id}/cancel", data={"csrf_token": await atoken(c)})
    assert r.status_code == 202 and r.json()["cancelled"] is True
    data = await wait_done(c, run_id)
    assert data["status"] == "cancelled" and data["done"] < 10_000
    assert len(data["sequence"]) == data["done"]


async def test_runs_table_service_page_and_compare(client: tuple[httpx.AsyncClient, Cluster]) -> None:
    c, _ = client
    first = (await c.post("/api/v1/probes", json=BODY)).json()["id"]
    second = (await c.post("/api/v1/probes", json={**BODY, "reuse": True, "concurrency": 1})).json()["id"]
    for run_id in (first, second):
        data = await wait_done(c, run_id)
        assert data["client"] == {"pod": None, "ip": None, "node": None}
    page = await c.get("/services/demo/web")
    assert page.status_code == 200 and 'data-testid="recent-runs"' in page.text
    assert page.text.count('data-testid="run-row"') == 2 and f'href="/runs/{first}"' in page.text
    assert "3 pods: web-0 33%" in page.text  # the distribution summary
    runs = await c.get("/runs?namespace=demo&service=web", headers={"HX-Request": "true"})
    assert "<html" not in runs.text and runs.text.count('data-testid="run-row"') == 2
    assert (await c.get("/runs?namespace=demo&service=db")).text.count('data-testid="run-row"') == 0

    api = await c.get(f"/api/v1/probes/compare?ids={first},{second}")
    assert api.status_code == 200, api.text
    data = api.json()
    assert [r["id"] for r in data["runs"]] == [first, second]
    assert [r["origin"] for r in data["runs"]] == ["dashboard", "dashboard"]
    shares = {row["pod"]: [cell["hits"] for cell in row["runs"]] for row in data["pods"]}
    assert [sum(col) for col in zip(*shares.values(), strict=True)] == [30, 30]
    assert sorted(shares) == ["web-0", "web-1", "web-2"]
    assert max(hits[1] for hits in shares.values()) == 30  # the reused connection: one pod got all
    assert any("balances connections, not requests" in n for n in data["notes"])
    html = await c.get(f"/runs/compare?ids={first}&ids={second}")
    assert html.status_code == 200 and html.text.count('data-testid="compare-verdict"') == 2
    assert html.text.count('data-testid="compare-pod"') == 3


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("ids=aaaaaaaaaaaa", 422, "between 2 and 6"),
        ("ids=aaaaaaaaaaaa,nope", 422, "not a run id"),
        ("ids=aaaaaaaaaaaa,bbbbbbbbbbbb", 404, "not found"),
        ("", 422, "ids"),
    ],
)
async def test_compare_refusals(
    client: tuple[httpx.AsyncClient, Cluster], query: str, status: int, message: str
) -> None:
    c, _ = client
    for path in ("/api/v1/probes/compare", "/runs/compare"):
        r = await c.get(f"{path}?{query}", headers={"Accept": "application/json"})
        assert r.status_code == status, (path, r.text)
        assert message in r.json()["detail"]


async def test_configured_count_limit_is_the_one_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """SVCSCOPE_PROBE_MAX_COUNT reaches the API's validation and the form's max= alike."""
    monkeypatch.setenv("SVCSCOPE_PROBE_MAX_COUNT", "20000")
    async for cluster in make_cluster(1):
        settings = Settings(csrf_secret=SECRET)
        assert settings.probe_max_count == 20_000
        app = create_app(settings, cache=filled_cache(cluster), start_watchers=False)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
                form = await c.get("/probes/new?namespace=demo&service=web")
                assert 'name="count" value="600" min="1" max="20000"' in form.text
                over = await c.post("/api/v1/probes", json={**BODY, "count": 20_001})
                assert over.status_code == 422 and "count must be between 1 and 20000" in over.text
                started = await c.post("/api/v1/probes", json={**BODY, "count": 15_000, "concurrency": 1})
                assert started.status_code == 202, started.text
                await c.post(f"/api/v1/probes/{started.json()['id']}/cancel", json={})
