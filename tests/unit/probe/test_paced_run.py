"""A paced run against the fake cluster: the waits happen between requests, the run reports ClientIP picks
over time (the fake balancer rotates, so every change within the timeout is called unexpected), and bad
pacing is refused before anything is sent."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest

from app.probe.run import Run, RunStatus
from app.probe.runner import ProbeRunner
from app.probe.spec import ProbeSpec, SpecError
from tests.unit.fakes import NS, Cluster, limits, make_cluster

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async for c in make_cluster(2, affinity="ClientIP", affinity_timeout_s=5):
        yield c


def paced(**kw: object) -> ProbeSpec:
    base: dict[str, object] = {
        "namespace": NS,
        "service": "web",
        "port": "http",
        "count": 4,
        "concurrency": 1,
    }
    return ProbeSpec(**{**base, **kw})  # type: ignore[arg-type]


async def finished(run: Run) -> Run:
    assert run.task is not None
    await asyncio.wait_for(asyncio.shield(run.task), 20)
    return run


async def test_requests_wait_as_paced_and_the_picks_are_reported(cluster: Cluster) -> None:
    runner = ProbeRunner(cluster.view, limits(), dial=cluster.dial, dashboard_node="node-1")
    run = await finished(runner.start(paced(interval_s=0.05, pause_after=2, pause_s=0.1)))
    assert run.status == RunStatus.DONE
    starts = [o.at_ms for o in sorted(run.results, key=lambda o: o.seq)]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[0] >= 50 and gaps[1] >= 150 and gaps[2] >= 50  # a lower bound only: waits are at least that
    s = run.summary()
    a = s.affinity
    assert a is not None and a.timeout_s == 5 and a.requests == 4 and a.fresh == ()
    # The fake balancer alternates pods: a ClientIP client moving within the timeout is not affinity at work.
    assert len(a.unexpected) == 3 and not a.changes_explained
    assert s.routing is not None and not s.routing.as_expected
    assert any("ClientIP affinity should keep one client on one pod" in line for line in s.routing.lines)


async def test_a_service_without_clientip_has_no_affinity_report() -> None:
    async for c in make_cluster(2):
        run = await finished(c.runner().start(paced(interval_s=0.01)))
        assert run.summary().affinity is None


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"interval_s": 1.0, "concurrency": 2}, "one request at a time"),
        ({"interval_s": 1.0, "reuse": True}, "turn reuse off"),
        ({"pause_after": 2}, "go together"),
        ({"count": 100, "interval_s": 600.0}, "longer than the run deadline"),
    ],
)
async def test_bad_pacing_is_refused(cluster: Cluster, kw: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        cluster.runner().start(paced(**kw))
