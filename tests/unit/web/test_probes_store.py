"""Probe runs with the run store: they survive a restart unchanged, a run cut short reads "interrupted",
a missing run's 404 says why, and a finished run's block is rendered once for every viewer."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.domain import ObjectKey
from app.lifespan import start_store
from app.main import create_app
from app.probe.runner import ProbeRunner
from app.state import AppState
from app.store import Batch, RunStore, StoreConfig
from app.store.runs import start_of
from tests.unit.fakes import Cluster, limits, make_cluster
from tests.unit.web.test_probes import BODY, SECRET, filled_cache, wait_done

pytestmark = pytest.mark.timeout(60)


@asynccontextmanager
async def dashboard(
    cluster: Cluster, path: Path, node: str | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    """One dashboard process's life on the store at ``path`` (entering again is a restart), on ``node``."""
    cache = filled_cache(cluster)
    settings = Settings(csrf_secret=SECRET, sse_coalesce_s=0.05, store_path="")
    app = create_app(settings, cache=cache, start_watchers=False)
    async with app.router.lifespan_context(app):
        state: AppState = app.state.svc
        state.settings = settings.model_copy(update={"store_path": str(path), "store_lock_wait_s": 0.0})
        runner = ProbeRunner(cache, limits(), dial=cluster.dial, dashboard_node=node)
        await start_store(state, runner)  # what the lifespan does, with the test's dial
        state.probe_runner = runner
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost"
        ) as c:
            yield c, state
        await runner.aclose()


async def test_finished_run_survives_a_restart_identical(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async for cluster in make_cluster(3):
        async with dashboard(cluster, path) as (c, _):
            run_id = (await c.post("/api/v1/probes", json=BODY)).json()["id"]
            before = await wait_done(c, run_id)
            csv_before = (await c.get(f"/api/v1/probes/{run_id}.csv")).text
        async with dashboard(cluster, path) as (c, state):
            assert state.probe_runner is not None and state.probe_runner.get(run_id) is not None  # listed
            after = (await c.get(f"/api/v1/probes/{run_id}")).json()
            assert after == before
            assert after["done"] == 30 and len(after["sequence"]) == 30
            assert (await c.get(f"/api/v1/probes/{run_id}.csv")).text == csv_before
            page = await c.get(f"/runs/{run_id}")
            assert page.status_code == 200 and page.text.count('title="#') == 30
            listing = await c.get("/runs")
            assert run_id in listing.text


async def test_the_routing_verdict_is_stored_with_the_run_and_frozen(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async for cluster in make_cluster(3):
        async with dashboard(cluster, path, node="node-1") as (c, state):
            run_id = (await c.post("/api/v1/probes", json=BODY)).json()["id"]
            before = await wait_done(c, run_id)
            assert before["client"]["node"] == "node-1"
            assert (
                before["routing"]["expected"] == ["web-0", "web-1", "web-2"]
                and before["routing"]["as_expected"]
            )
            # The Service turns Local and its pods move away after the run: the verdict stays as it was.
            svc = state.cache.service(ObjectKey("demo", "web"))
            assert svc is not None
            state.cache.upsert_service(dataclasses.replace(svc, internal_traffic_policy="Local"))
            assert (await c.get(f"/api/v1/probes/{run_id}")).json() == before
        async with dashboard(cluster, path, node="node-2") as (c, _):
            assert (await c.get(f"/api/v1/probes/{run_id}")).json() == before  # read back from the store
            page = await c.get(f"/runs/{run_id}")
            assert "as expected: every answer came from the 3 expected endpoint(s)" in page.text


async def test_report_is_frozen_when_the_endpoints_change_afterwards(tmp_path: Path) -> None:
    async for cluster in make_cluster(3):
        async with dashboard(cluster, tmp_path / "runs.db") as (c, state):
            run_id = (await c.post("/api/v1/probes", json=BODY)).json()["id"]
            before = await wait_done(c, run_id)
            assert before["chi_square"] is not None and not before["endpoints_changed"]
            # A pod is replaced after the run ended: the report must not change.
            state.cache.delete_pod(ObjectKey("demo", "web-0"))
            for es in cluster.view.slices[ObjectKey("demo", "web")]:
                state.cache.delete_slice(es.key)
            assert (await c.get("/services/demo/web")).status_code == 200
            after = (await c.get(f"/api/v1/probes/{run_id}")).json()
            assert after == before


async def test_run_cut_short_by_a_dead_process_reads_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async for cluster in make_cluster(3):
        # A process recorded the start and 7 results of a 30-request run, then died (no end recorded).
        store = RunStore.open(StoreConfig(path))
        try:
            dead = _spec_run(cluster, "0123456789ab")
            store.begin(start_of(dead))
            store.append(dead.id, Batch(outcomes=tuple(_outcomes(7))))
        finally:
            store.close()
        async with dashboard(cluster, path) as (c, _):
            data = (await c.get("/api/v1/probes/0123456789ab")).json()
            assert data["status"] == "interrupted"
            assert data["error"].startswith("interrupted at 7/30")
            assert data["done"] == 7
            # A tab left open on the run reconnects: the live block is replaced by the final one.
            stream = await c.get("/runs/0123456789ab/stream")
            assert stream.status_code == 200
            assert [ln for ln in stream.text.splitlines() if ln.startswith("event:")] == ["event: done"]
            assert "interrupted at 7/30" in stream.text and "sse-connect" not in stream.text


async def test_graceful_stop_mid_run_records_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async for cluster in make_cluster(3):
        async with dashboard(cluster, path) as (c, _):
            run_id = (
                await c.post("/api/v1/probes", json={**BODY, "count": 10_000, "concurrency": 1})
            ).json()["id"]
            deadline = time.monotonic() + 10
            while (await c.get(f"/api/v1/probes/{run_id}")).json()["done"] < 5:
                assert time.monotonic() < deadline, "the run made no progress"
                await asyncio.sleep(0.02)
        async with dashboard(cluster, path) as (c, _):
            data = (await c.get(f"/api/v1/probes/{run_id}")).json()
            assert data["status"] == "interrupted"
            assert (
                data["error"]
                == f"interrupted at {data['done']}/10000: svcscope stopped while the run was going on"
            )
            assert len(data["sequence"]) == data["done"] >= 5


async def test_missing_runs_say_why(tmp_path: Path) -> None:
    async for cluster in make_cluster(3):
        async with dashboard(cluster, tmp_path / "runs.db") as (c, _):
            for url in ("/api/v1/probes/000000000000", "/runs/000000000000", "/runs/000000000000/stream"):
                r = await c.get(url)
                assert r.status_code == 404, url
                assert "no such run" in r.text and "only the last" not in r.text


async def test_unknown_run_stream_is_404_without_a_store() -> None:
    async for cluster in make_cluster(1):
        app = create_app(
            Settings(csrf_secret=SECRET, store_path=""), cache=filled_cache(cluster), start_watchers=False
        )
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://localhost"
            ) as c:
                r = await c.get("/runs/000000000000/stream")
                assert r.status_code == 404 and "no such run" in r.text


async def test_final_block_is_rendered_once_for_many_viewers(tmp_path: Path) -> None:
    viewers = 20
    async for cluster in make_cluster(3):
        async with dashboard(cluster, tmp_path / "runs.db") as (c, state):
            run_id = (await c.post("/api/v1/probes", json={**BODY, "count": 300})).json()["id"]

            async def watch(run_id: str) -> list[str]:
                r = await c.get(f"/runs/{run_id}/stream")
                return [ln for ln in r.text.splitlines() if ln.startswith("event:")]

            seen = await asyncio.gather(*(watch(run_id) for _ in range(viewers)))
            assert all(events[-1] == "event: done" for events in seen)
            finals = [k for k in state.fragments._items if isinstance(k, tuple) and k[0] == "final"]
            assert finals == [("final", run_id)]
            page = await c.get(f"/runs/{run_id}", headers={"HX-Request": "true"})
            assert page.text == state.fragments._items[("final", run_id)]


async def test_long_run_strip_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.web.probes.STRIP_MAX", 10)
    async for cluster in make_cluster(3):
        async with dashboard(cluster, tmp_path / "runs.db") as (c, _):
            run_id = (await c.post("/api/v1/probes", json={**BODY, "count": 50})).json()["id"]
            await wait_done(c, run_id)
            page = (await c.get(f"/runs/{run_id}")).text
            assert page.count('title="#') == 10
            assert 'data-hidden="40"' in page and "#1 " in page and "#50 " in page


def _spec() -> Any:
    from app.web.probes import ProbeRequest

    return ProbeRequest(**BODY).spec()


def _spec_run(cluster: Cluster, run_id: str) -> Any:
    from app.probe.run import Run
    from app.probe.targets import resolve

    spec = _spec()
    target = resolve(cluster.view, ObjectKey(spec.namespace, spec.service), spec.port, spec.protocol)
    run = Run(run_id, spec, target, None, cluster.view)
    run.current()
    return run


def _outcomes(n: int) -> list[Any]:
    from app.probe.stats import Outcome

    return [Outcome(i, "web-0", None, 1.0, i, at_ms=float(i)) for i in range(1, n + 1)]


async def test_viewers_of_a_running_run_share_its_summaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.probe import run as run_module
    from app.probe.stats import summarize as real

    calls = 0

    def counting(*args: Any, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        return real(*args, **kw)

    monkeypatch.setattr(run_module, "summarize", counting)
    viewers = 20
    async for cluster in make_cluster(3):
        async with dashboard(cluster, tmp_path / "runs.db") as (c, _):
            run_id = (await c.post("/api/v1/probes", json={**BODY, "count": 2000, "concurrency": 2})).json()[
                "id"
            ]

            async def watch(run_id: str) -> int:
                r = await c.get(f"/runs/{run_id}/stream")
                return r.text.count("event: summary")

            summaries = sum(await asyncio.gather(*(watch(run_id) for _ in range(viewers))))
    assert summaries >= 2 * viewers  # the viewers did follow the run live
    assert calls * 4 < summaries, f"{calls} summaries computed for {summaries} sent"
