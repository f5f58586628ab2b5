"""A running watch writes its ClientIP re-picks and exact first/last hits to the store, so the stored watch
shows them after a restart."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from app.probe.watchrun import WatchSpec
from app.store import AsyncRunStore, StoreConfig
from app.watching import WatchManager
from tests.unit.fakes import make_cluster, watch_bounds

pytestmark = pytest.mark.timeout(40)


async def test_repicks_and_exact_hits_reach_the_store(tmp_path: Path) -> None:
    store = await AsyncRunStore.open(StoreConfig(tmp_path / "runs.db"))
    try:
        # A ClientIP Service behind the fake balancer, which rotates: every reply is a re-pick (unexpected).
        async for cluster in make_cluster(2, affinity="ClientIP", affinity_timeout_s=5):
            manager = WatchManager(cluster.view, watch_bounds(), dial=cluster.dial, store=store)
            spec = WatchSpec("demo", "web", "http", rate=20, duration_s=1.0, timeout_s=1.0)
            w = manager.start(dataclasses.replace(spec))
            assert w.task is not None
            await asyncio.wait_for(asyncio.shield(w.task), 20)
            facts = await store.watch_facts(w.id)
            assert w.series.repicks and facts.repicks == tuple(w.series.repicks)
            assert all(not r.expected for r in facts.repicks)
            assert {p: (f, la) for p, f, la in facts.hits} == {
                p: (w.series.first_hit[p], w.series.last_hit[p]) for p in w.series.first_hit
            }
            await manager.aclose()
    finally:
        await store.aclose()
