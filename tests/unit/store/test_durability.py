"""What a dying dashboard leaves in the run store: the real runner probing local echo servers, the real store
on a file in tmp_path.

A SIGKILL leaves exactly what was committed; SQLite's online backup copies that state at one instant, so the
copy is the file as a killed process would have left it. A graceful stop (what SIGTERM starts) records every
result the run had before it ended, with the same count in the message and in the stored rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from app import lifespan as lifespan_module
from app.config import Settings
from app.lifespan import begin_shutdown
from app.main import create_app
from app.probe.run import Run, RunStatus
from app.probe.runner import ProbeRunner
from app.state import AppState
from app.store import AsyncRunStore, RunRecord, RunRecorder, RunStore, StoreConfig, StoredRun
from app.store.runs import restored, store_sinks
from tests.unit.fakes import Cluster, limits, make_cluster
from tests.unit.probe.test_runner import spec
from tests.unit.store.factory import end, outcomes, start
from tests.unit.web.test_probes import SECRET, filled_cache

pytestmark = pytest.mark.timeout(60)

LONG = {"count": 10_000, "concurrency": 1}
PROGRESS_DEADLINE_S = 30.0  # far above what 20 requests to a local echo server take


async def _until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + PROGRESS_DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)  # polling, bounded by the deadline


async def test_a_runs_first_result_is_written_at_once_not_after_the_interval(tmp_path: Path) -> None:
    store = await AsyncRunStore.open(StoreConfig(tmp_path / "runs.db"))
    try:
        await store.begin(start(total=100))
        # An interval far longer than the test: only the first-result rule can write here.
        rec = RunRecorder(store, "r1", timeout_s=2.0, flush_s=3600, flush_outcomes=1000)
        rec.start()
        first = outcomes(1)
        rec.add(first[0])
        await asyncio.wait_for(rec.wait_written(1), timeout=10)
        got = await store.get("r1")
        assert isinstance(got, StoredRun) and got.outcomes == tuple(first)
        assert got.record.status == "running" and got.record.outcomes_stored == 1
        await rec.finish(end(first))
    finally:
        await store.aclose()


def _snapshot(src: Path, dst: Path) -> int:
    """Copy the committed state of ``src`` to ``dst`` (what a SIGKILL would leave); returns its outcomes."""
    with contextlib.closing(sqlite3.connect(src)) as source, contextlib.closing(sqlite3.connect(dst)) as copy:
        source.backup(copy)
        return int(copy.execute("SELECT count(*) FROM outcomes").fetchone()[0])


async def _stored(store: AsyncRunStore, run_id: str) -> int:
    record = await store.record(run_id)
    return record.outcomes_stored if isinstance(record, RunRecord) else 0


async def test_a_killed_run_reads_interrupted_at_what_was_written(tmp_path: Path) -> None:
    path, killed = tmp_path / "runs.db", tmp_path / "killed.db"
    async for cluster in make_cluster(3):
        store = await AsyncRunStore.open(StoreConfig(path))
        runner = ProbeRunner(cluster.view, limits(), dial=cluster.dial, sinks=store_sinks(store))
        try:
            run = runner.start(spec(**LONG))
            # Progress reaches the file while the run goes on, not only at its end.
            deadline = time.monotonic() + PROGRESS_DEADLINE_S
            while await _stored(store, run.id) < 20:
                assert time.monotonic() < deadline, "no progress was written while the run went on"
                await asyncio.sleep(0.01)  # polling, bounded by the deadline
            written = await asyncio.to_thread(_snapshot, path, killed)
            assert not run.finished and written >= 20
        finally:
            await runner.aclose()
            await store.aclose()

    # A new process opens the file the killed one left.
    after = await AsyncRunStore.open(StoreConfig(killed))
    try:
        (cut,) = await after.mark_interrupted()
        message = f"interrupted at {written}/10000: svcscope stopped while the run was going on"
        assert cut.id == run.id and cut.done == written and cut.message == message
        got = await after.get(run.id)
        assert isinstance(got, StoredRun)
        shown = restored(got)
        assert shown.status is RunStatus.INTERRUPTED and shown.error == message
        assert shown.done == written and len(shown.summary().sequence) == written
        assert [o.seq for o in got.outcomes] == list(range(1, written + 1))  # concurrency 1: in order
    finally:
        await after.aclose()


async def _dashboard_stopped_mid_run(
    cluster: Cluster, path: Path, monkeypatch: pytest.MonkeyPatch, *, signal: bool
) -> Run:
    """Start the real lifespan on ``path``, start a long run, stop once 20 results are in; returns the run."""
    # The lifespan builds its own runner: give it the test's dial (the local echo servers).
    monkeypatch.setattr(lifespan_module, "ProbeRunner", functools.partial(ProbeRunner, dial=cluster.dial))
    settings = Settings(csrf_secret=SECRET, store_path=str(path), store_lock_wait_s=0.0)
    app = create_app(settings, cache=filled_cache(cluster), start_watchers=False)
    async with app.router.lifespan_context(app):
        state: AppState = app.state.svc
        assert state.probe_runner is not None and state.store is not None
        run = state.probe_runner.start(spec(**LONG))
        await _until(lambda: len(run.results) >= 20, "20 results")
        if signal:
            begin_shutdown(state)  # what the SIGTERM handler does, before the server's own shutdown
    return run


@pytest.mark.parametrize("signal", [True, False], ids=["sigterm", "lifespan-only"])
async def test_a_graceful_stop_records_every_result_with_the_exact_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signal: bool
) -> None:
    path = tmp_path / "runs.db"
    async for cluster in make_cluster(3):
        run = await _dashboard_stopped_mid_run(cluster, path, monkeypatch, signal=signal)
    n = len(run.results)
    message = f"interrupted at {n}/10000: svcscope stopped while the run was going on"
    assert n >= 20 and run.status is RunStatus.INTERRUPTED and run.error == message
    store = RunStore.open(StoreConfig(path))
    try:
        assert store.mark_interrupted() == []  # its end was recorded: nothing left "running"
        got = store.get(run.id)
        assert isinstance(got, StoredRun)
        assert got.record.status == "interrupted" and got.record.error == message
        assert got.record.outcomes_stored == n and got.summary().done == n
        assert sorted(o.seq for o in got.outcomes) == sorted(o.seq for o in run.results)
    finally:
        store.close()
