"""Watches over the web: the JSON API, CSV, the page's SVG timeline and its stream, on a loopback cluster."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.domain import ObjectKey
from app.main import create_app
from app.store import AsyncRunStore, StoreConfig
from app.watching import WatchManager
from app.web.watches import csv_cell
from tests.unit.fakes import Cluster, make_cluster, watch_bounds
from tests.unit.web.csrf import atoken
from tests.unit.web.test_probes import filled_cache

pytestmark = pytest.mark.timeout(40)
SECRET = "test-secret"
BODY = {"namespace": "demo", "service": "web", "port": "http", "rate": 40, "duration_s": 2, "timeout_s": 1}
BOUNDS = watch_bounds(max_active=3)


@pytest.fixture
async def client() -> AsyncIterator[tuple[httpx.AsyncClient, Cluster]]:
    async for cluster in make_cluster(3):
        cache = filled_cache(cluster)
        app = create_app(Settings(csrf_secret=SECRET), cache=cache, start_watchers=False)
        # The manager probes the loopback cluster (the app's own would dial the fake ClusterIP).
        app.state.svc.watches = WatchManager(cache, BOUNDS, dial=cluster.dial)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
                yield c, cluster


async def wait_finished(c: httpx.AsyncClient, watch_id: str) -> dict[str, Any]:
    for _ in range(1000):  # bounded: 1000 polls of 10 ms
        data: dict[str, Any] = (await c.get(f"/api/v1/watches/{watch_id}")).json()
        if data["status"] not in ("starting", "running"):
            return data
        await asyncio.sleep(0.01)
    raise AssertionError("watch did not finish")


async def test_api_json_csv_page_and_stream(client: tuple[httpx.AsyncClient, Cluster]) -> None:
    c, _ = client
    r = await c.post("/api/v1/watches", json=BODY)
    assert r.status_code == 202, r.text
    watch_id = r.json()["id"]
    assert r.json()["url"] == f"/watches/{watch_id}"
    # The stream follows the watch to its end: a timeline at most once per second, then the final block.
    stream = await c.get(f"/watches/{watch_id}/stream")
    names = [line[7:] for line in stream.text.splitlines() if line.startswith("event: ")]
    assert names[-1] == "done" and 2 <= names.count("timeline") <= 4, names
    data = await wait_finished(c, watch_id)
    assert data["status"] == "done"
    seconds = data["seconds"]
    assert sum(s["requests"] for s in seconds) == data["requests"] > 60
    total = data["total"]
    assert (
        sum(total["hits"].values()) + total["unattributed"] + sum(total["errors"].values())
        == data["requests"]
    )
    assert set(total["hits"]) == {"web-0", "web-1", "web-2"}
    assert data["saved"] is False  # no store in this app: memory only, and said so
    # CSV: one row per (second, pod).
    rows = list(csv.reader(io.StringIO((await c.get(f"/api/v1/watches/{watch_id}.csv")).text)))
    assert rows[0] == [
        "second",
        "requests",
        "pod",
        "hits",
        "error",
        "errors",
        "unattributed",
        "p50_ms",
        "p95_ms",
    ]
    assert sum(int(row[3]) for row in rows[1:] if row[3]) == sum(total["hits"].values())
    # The page: the same data as SVG, readable without JavaScript, no stream once finished.
    page = await c.get(f"/watches/{watch_id}")
    assert page.status_code == 200 and "<svg" in page.text and "sse-connect" not in page.text
    assert page.text.count('<rect class="f') >= 3 and "<title>second 0: web-0" in page.text
    assert "<script>" not in page.text.split("</head>")[1]  # no inline script in the body


async def test_live_page_streams_and_stops(client: tuple[httpx.AsyncClient, Cluster]) -> None:
    c, _ = client
    watch_id = (await c.post("/api/v1/watches", json={**BODY, "duration_s": 30})).json()["id"]
    page = await c.get(f"/watches/{watch_id}")
    assert f'sse-connect="/watches/{watch_id}/stream?after=' in page.text
    assert 'http-equiv="refresh"' in page.text
    r = await c.post(f"/api/v1/watches/{watch_id}/stop", json={}, headers={"Accept": "application/json"})
    assert r.status_code == 202 and r.json()["stopped"] is True
    data = await wait_finished(c, watch_id)
    assert data["status"] == "stopped"
    total = data["total"]
    assert (
        sum(total["hits"].values()) + total["unattributed"] + sum(total["errors"].values())
        == data["requests"]
    )


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ({**BODY, "rate": 500}, 422, "rate must be between 1 and 200"),
        ({**BODY, "duration_s": 3600}, 422, "duration_s must be between 1 and 60"),
        ({**BODY, "rate": "fast"}, 422, "rate"),
        ({**BODY, "bogus": 1}, 422, "bogus"),
        ({**BODY, "service": "nope"}, 404, "not known"),
        ({**BODY, "port": "nope"}, 422, "port"),
        ({**BODY, "path": "no-slash"}, 422, "path"),
    ],
)
async def test_refusals(
    client: tuple[httpx.AsyncClient, Cluster], body: dict[str, Any], status: int, text: str
) -> None:
    c, _ = client
    r = await c.post("/api/v1/watches", json=body)
    assert r.status_code == status, r.text
    assert text in r.text


async def test_unknown_watch_is_404(client: tuple[httpx.AsyncClient, Cluster]) -> None:
    c, _ = client
    for url in ("/api/v1/watches/0123456789ab", "/api/v1/watches/0123456789ab.csv", "/watches/0123456789ab"):
        assert (await c.get(url)).status_code == 404
    assert (await c.get("/api/v1/watches/not-an-id")).status_code == 422


async def test_service_page_form_starts_a_watch(client: tuple[httpx.AsyncClient, Cluster]) -> None:
    c, _ = client
    page = await c.get("/services/demo/web")
    assert page.status_code == 200 and 'action="/watches"' in page.text
    token = await atoken(c)
    form = {"namespace": "demo", "service": "web", "port": "http", "protocol": "HTTP", "rate": "5",
            "duration_s": "1", "window_s": "10", "path": "/", "csrf_token": token}  # fmt: skip
    assert (await c.post("/watches", data={**form, "csrf_token": "x.y"})).status_code == 403
    r = await c.post("/watches", data=form)
    assert r.status_code == 303 and r.headers["location"].startswith("/watches/")
    await wait_finished(c, r.headers["location"].rsplit("/", 1)[1])


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=HYPERLINK(1)", "'=HYPERLINK(1)"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM", "'@SUM"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("web-0", "web-0"),
        (12, "12"),
    ],
)
def test_csv_cells_are_never_formulas(value: object, cell: str) -> None:
    assert csv_cell(value) == cell


async def test_a_stored_watch_outlives_the_process_memory(tmp_path: Path) -> None:
    async for cluster in make_cluster(3):
        cache = filled_cache(cluster)
        store = await AsyncRunStore.open(StoreConfig(tmp_path / "runs.db"))
        app = create_app(Settings(csrf_secret=SECRET), cache=cache, start_watchers=False)
        app.state.svc.watches = WatchManager(cache, BOUNDS, dial=cluster.dial, store=store)
        try:
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
                    body = {**BODY, "duration_s": 30}
                    watch_id = (await c.post("/api/v1/watches", json=body)).json()["id"]
                    w = app.state.svc.watches.get(watch_id)
                    for _ in range(500):  # bounded: 5 s of 10 ms polls
                        if w.series.requests > 40:
                            break
                        await asyncio.sleep(0.01)
                    # The Service's affinity flips mid-watch: an event, and a marker on the timeline.
                    svc = cluster.view.services[ObjectKey("demo", "web")]
                    cache.upsert_service(
                        dataclasses.replace(svc, session_affinity="ClientIP", affinity_timeout_s=60)
                    )
                    for _ in range(500):
                        if w.events:
                            break
                        await asyncio.sleep(0.01)
                    for _ in range(500):  # under ClientIP the rotating fake balancer shows re-picks
                        if w.series.repicks:
                            break
                        await asyncio.sleep(0.01)
                    stop = f"/api/v1/watches/{watch_id}/stop"
                    r = await c.post(stop, json={}, headers={"Accept": "application/json"})
                    assert r.status_code == 202, r.text
                    live = await wait_finished(c, watch_id)
                    live_csv = (await c.get(f"/api/v1/watches/{watch_id}.csv")).text
                    assert live["saved"] is True and live["stored"] is False
                    for _ in range(500):  # its end reaches the store just after it stops
                        if w.task.done():
                            break
                        await asyncio.sleep(0.01)
                    await app.state.svc.watches.aclose()
                    # A new manager on the same store: what a restarted dashboard has.
                    app.state.svc.watches = WatchManager(cache, BOUNDS, dial=cluster.dial, store=store)
                    stored = (await c.get(f"/api/v1/watches/{watch_id}")).json()
                    assert stored["stored"] is True and stored["status"] == "cancelled"
                    assert stored["requests"] == live["requests"] and stored["seconds"] == live["seconds"]
                    assert stored["total"] == live["total"] and stored["events"] == live["events"]
                    assert [e["field"] for e in stored["events"]] == [
                        "sessionAffinity",
                        "sessionAffinityTimeoutSeconds",
                    ]
                    assert stored["session_affinity"] == "ClientIP"
                    # The fake balancer rotates: under ClientIP each reply is an (unexpected) re-pick, and
                    # the store keeps them, and each pod's first and last hit exactly.
                    repicks = stored["measurements"]["clientip_repicks"]
                    assert repicks and repicks == live["measurements"]["clientip_repicks"]
                    assert (
                        stored["measurements"]["gone_to_last_hit"] == live["measurements"]["gone_to_last_hit"]
                    )
                    (flip,) = stored["measurements"]["affinity_convergence"]
                    assert (flip["before"], flip["after"]) == ("None", "ClientIP")
                    assert (await c.get(f"/api/v1/watches/{watch_id}.csv")).text == live_csv
                    # The page from the store: the same columns, the markers, no stream.
                    page = (await c.get(f"/watches/{watch_id}")).text
                    assert "sse-connect" not in page and "from the run store" in page
                    assert page.count('<svg class="wsec"') == len(stored["seconds"])
                    assert "s: Service sessionAffinity: None → ClientIP</title>" in page
                    assert (await c.get("/api/v1/watches/0123456789ab")).status_code == 404
                    assert (await c.get("/watches/0123456789ab")).status_code == 404
        finally:
            await store.aclose()
