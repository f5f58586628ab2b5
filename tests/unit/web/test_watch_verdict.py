"""A watch's page and JSON carry the expected-versus-observed verdict of its rolling window, for the
dashboard's node; without a known node they say there is none."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.main import create_app
from app.watching import WatchManager
from tests.unit.fakes import make_cluster, watch_bounds
from tests.unit.web.test_probes import filled_cache

pytestmark = pytest.mark.timeout(40)
BODY = {"namespace": "demo", "service": "web", "port": "http", "rate": 40, "duration_s": 1, "timeout_s": 1}


async def finished_watch(node: str | None) -> tuple[dict[str, Any], str]:
    async for cluster in make_cluster(3):
        cache = filled_cache(cluster)
        app = create_app(Settings(csrf_secret="test-secret"), cache=cache, start_watchers=False)
        app.state.svc.watches = WatchManager(cache, watch_bounds(), dial=cluster.dial, dashboard_node=node)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
                watch_id = (await c.post("/api/v1/watches", json=BODY)).json()["id"]
                for _ in range(1000):  # bounded: 10 s of 10 ms polls
                    data: dict[str, Any] = (await c.get(f"/api/v1/watches/{watch_id}")).json()
                    if data["status"] not in ("starting", "running"):
                        return data, (await c.get(f"/watches/{watch_id}")).text
                    await asyncio.sleep(0.01)
    raise AssertionError("the watch did not finish")


async def test_the_rolling_window_is_judged_for_the_dashboards_node() -> None:
    data, page = await finished_watch("node-1")
    routing = data["routing"]
    assert routing["client_node"] == "node-1" and routing["fate"] == "routed"
    assert routing["expected"] == ["web-0", "web-1", "web-2"]
    assert routing["as_expected"] and routing["verdict"][0].startswith("as expected"), routing
    assert 'data-testid="watch-routing"' in page and 'data-as-expected="true"' in page


async def test_no_verdict_without_the_node() -> None:
    data, page = await finished_watch(None)
    assert data["routing"] is None
    assert 'data-testid="watch-routing-none"' in page
