"""Paced runs over the web: refused with words (4xx), the run's JSON and page tell ClientIP's story over
time, the form posts the pacing fields, and the comparison shows each run's expected-versus-observed
verdict."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.main import create_app
from app.probe.runner import ProbeRunner
from tests.unit.fakes import limits, make_cluster
from tests.unit.web.csrf import atoken
from tests.unit.web.test_probes import filled_cache

pytestmark = pytest.mark.timeout(30)
SECRET = "test-secret"
BODY = {
    "namespace": "demo",
    "service": "web",
    "port": "http",
    "count": 3,
    "concurrency": 1,
    "interval_s": 0.02,
}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async for cluster in make_cluster(2, affinity="ClientIP", affinity_timeout_s=5):
        cache = filled_cache(cluster)
        app = create_app(Settings(csrf_secret=SECRET), cache=cache, start_watchers=False)
        async with app.router.lifespan_context(app):
            app.state.svc.probe_runner = ProbeRunner(
                cache, limits(), dial=cluster.dial, dashboard_node="node-1"
            )
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
                yield c
            await app.state.svc.probe_runner.aclose()


async def done(c: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    r = await c.post("/api/v1/probes", json=body)
    assert r.status_code == 202, r.text
    for _ in range(500):  # bounded: 500 polls of 10 ms
        data: dict[str, Any] = (await c.get(f"/api/v1/probes/{r.json()['id']}")).json()
        if data["status"] != "running":
            return data
        await asyncio.sleep(0.01)
    raise AssertionError("run did not finish")


async def test_a_paced_run_reports_picks_over_time_on_its_json_page_and_comparison(
    client: httpx.AsyncClient,
) -> None:
    first, second = await done(client, BODY), await done(client, BODY)
    assert first["spec"]["interval_s"] == 0.02 and first["spec"]["concurrency"] == 1
    a = first["affinity"]
    # The fake balancer alternates pods: under ClientIP every change within the timeout is a surprise.
    assert (a["timeout_s"], a["requests"], a["fresh_picks"], a["unexpected_changes"]) == (5, 3, 0, 2)
    assert [p["seq"] for p in a["picks"]] == [1, 2, 3] and a["lines"][0].startswith("3 requests, longest gap")
    page = (await client.get(f"/runs/{first['id']}")).text
    assert 'data-testid="affinity-time"' in page and "unexpected change" in page and "Each pick (3)" in page
    compare = (await client.get(f"/runs/compare?ids={first['id']},{second['id']}")).text
    assert compare.count('data-testid="compare-routing"') == 2 and 'data-as-expected="false"' in compare
    api = (await client.get(f"/api/v1/probes/compare?ids={first['id']},{second['id']}")).json()
    assert [r["routing"]["as_expected"] for r in api["runs"]] == [False, False]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"concurrency": 2}, "one request at a time"),
        ({"reuse": True}, "turn reuse off"),
        ({"pause_after": 1}, "go together"),
        ({"count": 50, "interval_s": 500.0}, "longer than the run deadline"),
        ({"interval_s": -1}, "interval_s must be between 0"),
    ],
)
async def test_bad_pacing_is_a_4xx_with_words(
    client: httpx.AsyncClient, extra: dict[str, Any], message: str
) -> None:
    r = await client.post("/api/v1/probes", json={**BODY, **extra})
    assert 400 <= r.status_code < 500 and message in r.text, r.text


async def test_the_form_offers_and_posts_pacing(client: httpx.AsyncClient) -> None:
    page = (await client.get("/services/demo/web")).text
    assert 'name="pause_s"' in page and "ClientIP timeout is 5 s" in page
    form = {k: str(v) for k, v in {**BODY, "pause_after": 2, "pause_s": 0.05}.items()}
    r = await client.post(
        "/probes", data={**form, "csrf_token": await atoken(client)}, headers={"Accept": "application/json"}
    )
    assert r.status_code in (200, 202, 303), r.text
    (run,) = (await client.get("/api/v1/probes")).json()
    assert (run["spec"]["pause_after"], run["spec"]["pause_s"], run["spec"]["interval_s"]) == (2, 0.05, 0.02)
