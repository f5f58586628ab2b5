"""A remote-origin run whose API calls are slow says "waiting for the apiserver", and stops saying it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

import pytest

from app.domain import Origin
from app.kube import client
from app.kube.client import bounded
from app.probe.run import RunStatus
from app.probe.runner import ProbeRunner
from tests.unit.fakes import Cluster, FakeRemote, limits, make_cluster, record_line
from tests.unit.probe.test_runner import finished, spec

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async for c in make_cluster(3):
        yield c


class SlowApiserver(FakeRemote):
    """The echo client in a pod whose first API call hangs until ``answer`` is set (a partition)."""

    def __init__(self) -> None:
        super().__init__([record_line(1, "web-0")])
        self.answer = asyncio.Event()

    async def _lines(self) -> AsyncGenerator[str, None]:
        await bounded(self.answer.wait(), "creating probe pod demo/x")
        async for line in super()._lines():
            yield line


async def test_a_slow_apiserver_shows_on_the_run_until_it_answers(cluster: Cluster, monkeypatch) -> None:
    monkeypatch.setattr(client, "SLOW_CALL_S", 0.0)
    remote = SlowApiserver()
    runner = ProbeRunner(cluster.view, limits(), remote=remote, origins=(Origin.PROBE_POD,))
    run = runner.start(spec(origin=Origin.PROBE_POD, count=1, concurrency=1))
    for _ in range(1000):  # bounded poll of the event loop
        if run.waiting:
            break
        await asyncio.sleep(0)
    assert run.waiting is not None and run.waiting.startswith("waiting for the apiserver (creating probe pod")
    assert not run.finished
    remote.answer.set()
    await finished(run)
    assert run.status == RunStatus.DONE and run.waiting is None
