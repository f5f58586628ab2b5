"""A run's report freezes when it ends, its results reach its sink, and the runner keeps memory bounded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from app.probe import runner as runner_module
from app.probe.run import Run, RunStatus
from app.probe.runner import ProbeRunner
from app.probe.sink import RunSink
from app.probe.stats import Outcome
from app.probe.targets import Backend
from tests.unit.fakes import SLICE_PORTS, WEB, Cluster, limits, make_cluster
from tests.unit.probe.test_runner import finished, spec

pytestmark = pytest.mark.timeout(30)


@dataclass
class RecordingSink:
    saved: bool = True
    outcomes: list[Outcome] = field(default_factory=list)
    samples: list[tuple[str, str]] = field(default_factory=list)
    endpoints: list[tuple[int, bool]] = field(default_factory=list)  # (current count, changed)
    attribution: list[tuple[str, str, str | None]] = field(default_factory=list)
    started: list[float] = field(default_factory=list)
    closed: list[tuple[RunStatus, str | None]] = field(default_factory=list)

    def add(self, outcome: Outcome, sample: tuple[str, str] | None) -> None:
        self.outcomes.append(outcome)
        if sample is not None:
            self.samples.append(sample)

    def note_endpoints(self, current: tuple[Backend, ...], known: tuple[Backend, ...], changed: bool) -> None:
        self.endpoints.append((len(current), changed))

    def note_attribution(self, mode: str, note: str, rule: str | None) -> None:
        self.attribution.append((mode, note, rule))

    def note_started(self, wall_time: float) -> None:
        self.started.append(wall_time)

    async def close(self, run: Run) -> None:
        assert run.final is not None  # the report is frozen before the end is recorded
        self.closed.append((run.status, run.error))


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async for c in make_cluster(3):
        yield c


def recording_runner(cluster: Cluster, sinks: list[RecordingSink]) -> ProbeRunner:
    async def open_sink(run: Run) -> RunSink:
        sink = RecordingSink()
        sinks.append(sink)
        return sink

    return ProbeRunner(cluster.view, limits(), dial=cluster.dial, sinks=open_sink)


async def test_every_result_and_the_end_reach_the_sink(cluster: Cluster) -> None:
    sinks: list[RecordingSink] = []
    run = await finished(recording_runner(cluster, sinks).start(spec(count=40)))
    (sink,) = sinks
    assert [o.seq for o in sorted(sink.outcomes, key=lambda o: o.seq)] == list(range(1, 41))
    assert {key for key, _ in sink.samples} == set(run.samples)
    assert sink.attribution and sink.started and sink.closed == [(RunStatus.DONE, None)]


async def test_endpoint_change_at_the_end_is_in_the_frozen_report(cluster: Cluster) -> None:
    run = await finished(cluster.runner().start(spec(count=30)))
    assert run.final is not None and not run.endpoints_changed
    # A fresh run whose endpoints change after its last request but before it ends.
    other = Run("0123456789ab", run.spec, run.target, None, cluster.view)
    other.current()
    for o in run.results:
        other.add(o)
    cluster.view.set_endpoints(WEB, [("web-0", "198.18.0.10")], SLICE_PORTS)
    other.finish(RunStatus.DONE)
    assert other.endpoints_changed
    assert other.final is not None and any("endpoints changed" in e for e in other.final.explanations)
    # Later changes leave both frozen reports alone.
    frozen = (run.summary(), other.summary())
    cluster.view.set_endpoints(WEB, [], SLICE_PORTS)
    assert (run.summary(), other.summary()) == frozen


async def test_closing_the_runner_interrupts_runs_and_records_their_end(cluster: Cluster) -> None:
    sinks: list[RecordingSink] = []
    runner = recording_runner(cluster, sinks)
    run = runner.start(spec(count=10_000, concurrency=1))
    for _ in range(500):  # bounded: until some results arrived
        if len(run.results) >= 5:
            break
        await asyncio.sleep(0.01)
    await runner.aclose()
    await runner.aclose()  # twice (signal handler and teardown): no second cancel
    assert run.status is RunStatus.INTERRUPTED
    assert (
        run.error == f"interrupted at {len(run.results)}/10000: svcscope stopped while the run was going on"
    )
    assert sinks[0].closed == [(RunStatus.INTERRUPTED, run.error)]


async def test_only_the_newest_saved_runs_keep_their_results(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "FINISHED_IN_MEMORY", 2)
    sinks: list[RecordingSink] = []
    runner = recording_runner(cluster, sinks)
    runs = [await finished(runner.start(spec(count=10))) for _ in range(4)]
    assert [r.complete for r in runs] == [False, False, True, True]
    assert runs[0].results == [] and runs[0].summary().done == 10 and runs[0].summary().sequence == ()
    assert [r.id for r in runner.runs()] == [r.id for r in reversed(runs)]  # still listed


async def test_unsaved_runs_keep_their_results(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "FINISHED_IN_MEMORY", 1)
    runner = cluster.runner()  # no sink: nothing else has the results
    runs = [await finished(runner.start(spec(count=10))) for _ in range(3)]
    assert all(r.complete and len(r.results) == 10 for r in runs)


async def test_endpoint_change_after_the_end_leaves_the_frozen_run_alone(cluster: Cluster) -> None:
    run = await finished(cluster.runner().start(spec(count=30)))
    assert run.final is not None and not run.endpoints_changed
    before = run.current()
    cluster.view.set_endpoints(WEB, [("web-0", "198.18.0.10")], SLICE_PORTS)
    assert run.current() == before  # whoever asks later (a page, a late worker) gets the frozen set
    assert not run.endpoints_changed and run.summary() is run.final
