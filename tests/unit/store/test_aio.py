from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.probe.stats import Outcome
from app.store import (
    AsyncRunStore,
    AttributionNote,
    Batch,
    FrozenEndpoints,
    Kind,
    Missing,
    RunRecorder,
    StoreConfig,
    StoredRun,
)
from tests.unit.store.factory import NOW, PODS_ABC, Clock, batches, end, final_summary, outcomes, start


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AsyncRunStore]:
    s = await AsyncRunStore.open(StoreConfig(tmp_path / "runs.db"), clock=Clock())
    yield s
    await s.aclose()


async def _stored(store: AsyncRunStore, run_id: str) -> StoredRun:
    got = await store.get(run_id)
    assert isinstance(got, StoredRun)
    return got


async def test_a_10000_request_run_is_written_in_a_handful_of_transactions(store: AsyncRunStore) -> None:
    results = outcomes(10_000)
    await store.begin(start(total=10_000))
    before = store.store.transactions
    # A long interval: only the outcome count triggers writes here.
    rec = RunRecorder(store, "r1", timeout_s=2.0, flush_s=3600, flush_outcomes=1000)
    rec.start()
    for i, o in enumerate(results):
        rec.add(o, sample=(o.pod or "unattributed", f"200 {o.pod}") if o.error is None else None)
        if i % 50 == 0:
            await asyncio.sleep(0)  # the event loop runs other work between requests, as in a real run
    await rec.finish(end(results))
    got = await _stored(store, "r1")
    assert got.outcomes == tuple(results)
    assert got.summary() == final_summary(results, FrozenEndpoints(PODS_ABC, PODS_ABC))
    assert set(got.record.samples) == {"echo-a", "echo-b", "echo-c", "unattributed"}
    assert sum(s.requests for s in await store.seconds("r1")) == 10_000
    # The first results go at once; every later write but the last carries at least 1000 outcomes: at most
    # 1 + 9 writes, plus the end.
    assert 2 <= store.store.transactions - before <= 11
    assert rec.written == 10_000 and rec.failed is None


async def test_results_are_written_within_the_interval_without_waiting_for_a_full_batch(
    store: AsyncRunStore,
) -> None:
    await store.begin(start())
    rec = RunRecorder(store, "r1", timeout_s=2.0, flush_s=0.02, flush_outcomes=1000)
    rec.start()
    for o in outcomes(3):
        rec.add(o)
    rec.note_attribution(AttributionNote("fingerprint", "matched by content"))
    rec.note_started(NOW + 0.1)
    await asyncio.wait_for(rec.wait_written(3), timeout=10)
    got = await _stored(store, "r1")
    assert len(got.outcomes) == 3 and got.record.status == "running"
    assert got.record.attribution == AttributionNote("fingerprint", "matched by content")
    assert got.record.started == NOW + 0.1
    await rec.finish(end(outcomes(3)))


async def test_a_watch_run_keeps_only_per_second_aggregates(store: AsyncRunStore) -> None:
    await store.begin(start("w", kind=Kind.WATCH, total=0))
    rec = RunRecorder(store, "w", timeout_s=1.0, keep_outcomes=False, flush_s=3600, flush_outcomes=1000)
    rec.start()
    pods = ("echo-a", "echo-b", "echo-c")
    for seq in range(1, 2001):  # 200 requests/s for 10 s
        rec.add(Outcome(seq, pods[seq % 3], None, 1.0, seq, at_ms=(seq - 1) * 5.0))
    await rec.flush()
    seconds = await store.seconds("w")
    # Only the seconds that can no longer change were written while it ran.
    assert [s.second for s in seconds] == list(range(7))  # the last report was at 9.996 s, grace 2 s
    await rec.finish(dataclasses.replace(end([]), summary=None))
    got = await _stored(store, "w")
    assert got.outcomes == () and got.record.kind == Kind.WATCH
    seconds = await store.seconds("w")
    assert [s.requests for s in seconds] == [200] * 10
    assert all(len(s.hits) == 3 for s in seconds)
    assert [s.second for s in await store.seconds("w", after=7)] == [8, 9]


async def test_a_run_cut_short_reads_back_as_interrupted_at_what_was_written(tmp_path: Path) -> None:
    config = StoreConfig(tmp_path / "runs.db")
    store = await AsyncRunStore.open(config)
    results = outcomes(100)
    await store.begin(start(total=100))
    rec = RunRecorder(store, "r1", timeout_s=2.0, flush_s=3600, flush_outcomes=1000)
    for o in results[:40]:
        rec.add(o)
    rec.note_endpoints(FrozenEndpoints(PODS_ABC[:2], PODS_ABC), changed=True)
    rec.start()  # its first write takes all of that at once; then it gathers for the interval
    await asyncio.wait_for(rec.wait_written(40), timeout=10)
    for o in results[40:55]:
        rec.add(o)  # never written: the process dies within the interval, before the next write
    await store.aclose()

    store = await AsyncRunStore.open(config)
    try:
        (cut,) = await store.mark_interrupted()
        assert cut.message.startswith("interrupted at 40/100")
        got = await _stored(store, "r1")
        assert got.record.status == "interrupted" and got.record.endpoints_changed
        assert got.endpoints == FrozenEndpoints(PODS_ABC[:2], PODS_ABC)
        assert got.summary().done == 40
    finally:
        await store.aclose()


async def test_finishing_applies_retention(tmp_path: Path) -> None:
    store = await AsyncRunStore.open(StoreConfig(tmp_path / "runs.db", max_runs=1), clock=Clock())
    try:
        for run_id, created in (("old", NOW - 10), ("new", NOW)):
            await store.begin(start(run_id, created=created))
            rec = RunRecorder(store, run_id, timeout_s=2.0)
            gone = await rec.finish(end([]))
        assert [t.id for t in gone] == ["old"]
        assert [r.id for r in await store.recent()] == ["new"]
        missing = await store.record("old")
        assert isinstance(missing, Missing) and missing.reason.endswith("beyond the newest 1 runs")
        assert await store.prune() == []
        assert 0 < await store.used_bytes() <= await store.size_bytes()
    finally:
        await store.aclose()


async def test_a_failing_store_does_not_fail_the_run(store: AsyncRunStore) -> None:
    await store.begin(start())
    rec = RunRecorder(store, "r1", timeout_s=2.0, flush_s=3600)
    rec.start()
    await asyncio.to_thread(store.store.close)  # e.g. the disk went away
    rec.add(outcomes(1)[0])
    await rec.flush()
    assert rec.failed is not None and "closed" in rec.failed
    await asyncio.wait_for(rec.wait_written(10), timeout=10)  # returns: nothing more will be written
    rec.add(outcomes(1, start=2)[0])  # still a cheap no-op for the run
    assert await rec.finish(end([])) == []


async def test_writes_keep_their_order_when_callers_must_wait_for_a_slot(tmp_path: Path) -> None:
    store = await AsyncRunStore.open(StoreConfig(tmp_path / "runs.db"), max_pending=1)
    try:
        await store.begin(start(total=1000))
        chunks = list(batches(outcomes(1000), 50))
        stored = await asyncio.gather(*(store.append("r1", Batch(outcomes=c)) for c in chunks))
        assert stored == [50] * 20
        got = await _stored(store, "r1")
        assert [o.seq for o in got.outcomes] == list(range(1, 1001))
    finally:
        await store.aclose()
