"""The watch manager on a loopback cluster (echo servers as pods, an L4 balancer as the ClusterIP)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from app.domain import ObjectKey
from app.probe.spec import RunLimitError, SpecError
from app.probe.targets import ProbeProtocol, UnknownService, resolve
from app.probe.watch import EventKind, Second
from app.probe.watchrun import MAX_TICK_S, TICK_S, Watch, WatchSpec, WatchStatus, start_grid
from app.store import AsyncRunStore, Kind, RunRecord, StoreConfig
from app.watching import WatchManager
from tests.unit.fakes import SLICE_PORTS, WEB, Cluster, make_cluster, watch_bounds

pytestmark = pytest.mark.timeout(40)

BOUNDS = watch_bounds()


def spec(**kw: object) -> WatchSpec:
    return dataclasses.replace(WatchSpec("demo", "web", "http", rate=50, duration_s=1.0, timeout_s=1.0), **kw)  # type: ignore[arg-type]


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async for c in make_cluster(3):
        yield c


async def until(check: object, what: str, seconds: float = 15.0) -> None:
    """Poll ``check()`` (a callable) until true, at most ``seconds``."""
    assert callable(check)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def accounted(w: Watch) -> int:
    t = w.series.total()
    return sum(n for _, n in t.hits) + t.unattributed + sum(n for _, n in t.errors)


async def test_a_watch_paces_attributes_and_counts_every_request(cluster: Cluster) -> None:
    manager = WatchManager(cluster.view, BOUNDS, dial=cluster.dial)
    w = manager.start(spec())
    await until(lambda: w.finished, "the watch to end")
    assert w.status is WatchStatus.DONE
    # 50 req/s for 1 s on a monotonic schedule: 50 slots, each sent or (on a busy loop) skipped.
    assert w.series.requests + w.skipped == 50
    assert w.series.requests == accounted(w) >= 40
    assert {p for p, _ in w.series.total().hits} == {"web-0", "web-1", "web-2"}
    assert w.series.total().errors == ()
    assert sum(s.requests for s in w.series.seconds()) == w.series.requests
    assert all(s.p50_ms is not None for s in w.series.seconds())
    await manager.aclose()


async def test_at_200_per_s_the_loop_wakes_for_the_watch_only_on_the_start_grid(cluster: Cluster) -> None:
    # Every timer the watch sets (the pacer's and the Service observer's) aims at a point of one grid
    # since the start, so the loop wakes for them at most 10 times a second, not once per request
    # and not once more per observation at a phase of its own.
    read = [time.monotonic()]

    def clock() -> float:
        read.append(time.monotonic())
        return read[-1]

    w = Watch(
        spec(rate=200, duration_s=1.0),
        resolve(cluster.view, ObjectKey("demo", "web"), "http", ProbeProtocol.HTTP),
        None,
        cluster.view,
        ring_s=60,
        clock=clock,
    )
    aims: list[float] = []

    async def sleep(delay: float) -> None:
        aims.append(read[-1] + delay - w.started)  # the time the caller aimed at, on its own clock
        await asyncio.sleep(delay)

    await asyncio.wait_for(w.execute(cluster.dial, sleep=sleep), 20)
    assert w.status is WatchStatus.DONE and w.series.requests + w.skipped == 200
    points = {round(a / MAX_TICK_S) for a in aims}
    assert all(abs(a - round(a / MAX_TICK_S) * MAX_TICK_S) < 1e-6 for a in aims), aims
    # At most one wake-up per grid point while it ran (a loaded machine stretches the run past 1 s).
    assert w.finished_at is not None and len(aims) >= 10
    assert len(points) <= (w.finished_at - w.started) / MAX_TICK_S + 2


def test_the_start_grid_groups_requests_at_high_rates_only_up_to_the_events_resolution() -> None:
    assert start_grid(200) == MAX_TICK_S  # 20 requests a step
    assert start_grid(2000) == TICK_S  # already 40 a step at the finest grid
    assert start_grid(1) == MAX_TICK_S and start_grid(400) == pytest.approx(0.05)


async def test_a_request_without_a_reply_ends_at_its_own_timeout_as_a_timeout(cluster: Cluster) -> None:
    # A backend that accepts and never answers. A grid point's requests share one timer; each must still
    # end as "timeout", no sooner than its own timeout after its own start, and every one must be counted.
    held: list[asyncio.StreamWriter] = []
    holds: list[float] = []  # how long the backend held each connection before the client closed it

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        accepted = time.monotonic()
        await reader.read()  # until the client gives up and closes
        holds.append(time.monotonic() - accepted)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    silent_port = server.sockets[0].getsockname()[1]
    target = resolve(cluster.view, ObjectKey("demo", "web"), "http", ProbeProtocol.HTTP)

    def dial(host: str, port: int) -> tuple[str, int]:
        # The pods answer calibration; the ClusterIP leads to the silent backend.
        return ("127.0.0.1", silent_port) if host == target.address else cluster.dial(host, port)

    w = Watch(spec(rate=40, duration_s=1.0, timeout_s=0.3), target, None, cluster.view, ring_s=60)
    async with server:
        await asyncio.wait_for(w.execute(dial), 20)
        await until(lambda: len(holds) == len(held), "the backend to see every close")
        for writer in held:
            writer.close()
            await writer.wait_closed()
    assert w.status is WatchStatus.DONE and w.in_flight == 0
    assert w.series.requests + w.skipped == 40 and w.series.requests >= 30
    assert dict(w.series.total().errors) == {"timeout": w.series.requests} == {"timeout": len(holds)}
    # Connected after the request's start (a loopback connect takes well under 10 ms), closed at its end.
    assert 0.3 - 0.01 <= min(holds) and max(holds) < 0.3 + 1.0, (min(holds), max(holds))


async def test_the_store_gets_each_second_once_when_no_request_can_change_it(cluster: Cluster) -> None:
    # Every third request goes to a backend that never answers, so seconds end with requests still under
    # way (until their 0.3 s timeout). A second handed to the store before those ended would miss them.
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    silent_port = server.sockets[0].getsockname()[1]
    target = resolve(cluster.view, ObjectKey("demo", "web"), "http", ProbeProtocol.HTTP)
    turn = itertools.count()

    def dial(host: str, port: int) -> tuple[str, int]:
        if host == target.address and next(turn) % 3 == 0:
            return ("127.0.0.1", silent_port)
        return cluster.dial(host, port)

    class Sink:
        def __init__(self) -> None:
            self.seconds: list[Second] = []

        def add_seconds(self, seconds: Sequence[Second]) -> None:
            self.seconds.extend(seconds)

    sink = Sink()
    w = Watch(spec(rate=30, duration_s=2.5, timeout_s=0.3), target, None, cluster.view, ring_s=60)
    async with server:
        await asyncio.wait_for(w.execute(dial, sink), 20)
        for writer in held:
            writer.close()
            await writer.wait_closed()
    assert w.status is WatchStatus.DONE
    handed = [s.second for s in sink.seconds]
    assert handed == sorted(set(handed)) and handed[0] == 0 and len(handed) >= 3
    assert sink.seconds == w.series.seconds()  # each as it finally is: nothing changed after it was handed
    assert sum(s.requests for s in sink.seconds) == w.series.requests
    assert sum(n for s in sink.seconds for k, n in s.errors if k == "timeout") >= w.series.requests // 4


async def test_stop_and_shutdown_end_watches_and_count_what_was_sent(cluster: Cluster) -> None:
    manager = WatchManager(cluster.view, BOUNDS, dial=cluster.dial)
    a = manager.start(spec(duration_s=30))
    b = manager.start(spec(duration_s=30))
    await until(lambda: a.series.requests > 5 and b.series.requests > 5, "requests")
    with pytest.raises(RunLimitError):
        manager.start(spec())  # max_active is 2
    assert manager.stop(a.id)
    await until(lambda: a.finished, "the stop")
    assert a.status is WatchStatus.STOPPED and a.series.requests == accounted(a) and a.in_flight == 0
    assert not manager.stop(a.id)  # already stopped
    await manager.aclose()
    assert b.status is WatchStatus.STOPPED and b.series.requests == accounted(b)
    with pytest.raises(RunLimitError):
        manager.start(spec())  # shutting down


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rate": 0}, "rate must be between 1 and 200"),
        ({"rate": 201}, "rate must be between 1 and 200"),
        ({"rate": float("nan")}, "rate must be"),
        ({"duration_s": 61}, "duration_s must be between 1 and 60"),
        ({"window_s": 0}, "window_s must be between 1 and 60"),
        ({"timeout_s": 9}, "timeout_s must be between"),
        ({"method": "POST"}, "method must be one of"),
        ({"identity": "nope:x"}, "identity"),
    ],
)
async def test_refusals(cluster: Cluster, change: dict[str, object], message: str) -> None:
    manager = WatchManager(cluster.view, BOUNDS, dial=cluster.dial)
    with pytest.raises(SpecError, match=message):
        manager.start(spec(**change))
    assert manager.watches() == []


async def test_unknown_service(cluster: Cluster) -> None:
    manager = WatchManager(cluster.view, BOUNDS, dial=cluster.dial)
    with pytest.raises(UnknownService):
        manager.start(spec(service="nope"))


async def test_scale_up_and_terminating_show_as_events_with_lags(cluster: Cluster) -> None:
    lb = cluster.http_lb
    three = list(lb.backends)
    pods = [(f"web-{i}", f"198.18.0.{10 + i}") for i in range(3)]
    # Start with two Ready pods: the balancer (our kube-proxy) sends only to those.
    cluster.view.set_endpoints(WEB, pods[:2], SLICE_PORTS)
    lb.backends, lb._next = three[:2], itertools.cycle(range(2))
    manager = WatchManager(cluster.view, BOUNDS, dial=cluster.dial)
    w = manager.start(spec(duration_s=30))
    await until(lambda: w.series.requests > 20, "traffic")
    # web-2 becomes a Ready endpoint; the balancer learns about it a little later (programming lag).
    cluster.view.set_endpoints(WEB, pods, SLICE_PORTS)
    await until(lambda: any(e.kind == EventKind.READY for e in w.events), "the Ready event")
    await asyncio.sleep(0.3)  # the simulated network-programming lag, not a synchronisation
    lb.backends, lb._next = three, itertools.cycle(range(3))
    await until(lambda: "web-2" in w.series.hits, "web-2's first hit")
    # web-0 begins terminating and leaves the balancer.
    slices = cluster.view.slices[WEB]
    eps = tuple(
        dataclasses.replace(e, conditions=dataclasses.replace(e.conditions, ready=False, terminating=True))
        if e.target_ref and e.target_ref.name == "web-0"
        else e
        for e in slices[0].endpoints
    )
    cluster.view.slices[WEB] = [dataclasses.replace(slices[0], endpoints=eps)]
    lb.backends, lb._next = three[1:], itertools.cycle(range(2))
    await until(lambda: any(e.kind == EventKind.TERMINATING for e in w.events), "the terminating event")
    manager.stop(w.id)
    await until(lambda: w.finished, "the stop")
    m = w.measurements()
    (ready,) = m.ready_to_first_hit
    assert ready.pod == "web-2" and ready.lag_s is not None and 0.25 <= ready.lag_s < 5
    (gone,) = m.gone_to_last_hit
    assert gone.pod == "web-0" and gone.lag_s is not None and gone.lag_s < 1.0
    assert w.series.requests == accounted(w)
    texts = [e.text for e in w.events]
    assert any("web-2" in t and "Ready" in t for t in texts) and any(
        "web-0" in t and "terminating" in t for t in texts
    )
    await manager.aclose()


async def test_affinity_flip_is_an_event(cluster: Cluster) -> None:
    manager = WatchManager(cluster.view, BOUNDS, dial=cluster.dial)
    w = manager.start(spec(duration_s=30))
    await until(lambda: w.series.requests > 5, "traffic")
    key = ObjectKey("demo", "web")
    svc = cluster.view.services[key]
    cluster.view.services[key] = dataclasses.replace(svc, session_affinity="ClientIP", affinity_timeout_s=60)
    await until(lambda: w.affinity == "ClientIP", "the flip to be seen")
    # The requests after the flip are judged by the new rule: the loopback balancer still round-robins, so
    # under ClientIP each change of pod is a re-pick, unexpected (no idle gap beyond the 60 s timeout).
    await until(lambda: len(w.series.repicks) >= 2, "re-picks under ClientIP")
    manager.stop(w.id)
    await until(lambda: w.finished, "the stop")
    assert all(not r.expected for r in w.series.repicks)
    fields = [e.field for e in w.events if e.kind == EventKind.SERVICE]
    assert fields == ["sessionAffinity", "sessionAffinityTimeoutSeconds"]
    (c,) = w.measurements().convergence
    assert (c.before, c.after) == ("None", "ClientIP")  # the loopback balancer has no affinity: not converged
    await manager.aclose()


async def test_per_second_aggregates_are_stored(cluster: Cluster, tmp_path: Path) -> None:
    store = await AsyncRunStore.open(StoreConfig(tmp_path / "runs.db"))
    try:
        manager = WatchManager(cluster.view, BOUNDS, dial=cluster.dial, store=store)
        w = manager.start(spec(duration_s=1.5))
        await until(lambda: w.finished, "the watch to end")
        await manager.aclose()
        await until(lambda: w.task is not None and w.task.done(), "the store writes")
        record = await store.record(w.id)
        assert isinstance(record, RunRecord)
        assert (record.kind, record.status, record.total) == (Kind.WATCH, "done", 0)
        seconds = await store.seconds(w.id)
        assert sum(s.requests for s in seconds) == w.series.requests
        assert {p for s in seconds for p, _ in s.hits} == {"web-0", "web-1", "web-2"}
        assert record.outcomes_stored == 0  # a watch keeps aggregates only
        assert w.id not in manager.not_saved
    finally:
        await store.aclose()


async def test_a_watch_stopped_before_it_ran_ends_stopped(cluster: Cluster) -> None:
    manager = WatchManager(cluster.view, BOUNDS, dial=cluster.dial)
    w = manager.start(spec(duration_s=30))
    assert manager.stop(w.id)  # before the task had a chance to run
    await until(lambda: w.task is not None and w.task.done(), "the task to end")
    assert w.status is WatchStatus.STOPPED and w.finished and manager.active == 0
    assert w.series.requests == 0


async def test_cluster_events_reach_the_store_while_the_watch_runs(cluster: Cluster, tmp_path: Path) -> None:
    store = await AsyncRunStore.open(StoreConfig(tmp_path / "runs.db"))
    try:
        manager = WatchManager(cluster.view, BOUNDS, dial=cluster.dial, store=store)
        w = manager.start(spec(duration_s=30))
        await until(lambda: w.series.requests > 5, "traffic")
        key = ObjectKey("demo", "web")
        cluster.view.services[key] = dataclasses.replace(
            cluster.view.services[key], session_affinity="ClientIP"
        )
        await until(lambda: w.event_count == 1, "the flip to be seen")
        # Written while the watch goes on, so a dashboard that dies mid-watch still has them.
        stored = None
        for _ in range(300):  # bounded: 3 s of 10 ms polls (the writer flushes every second)
            stored = await store.events(w.id)
            if stored.events:
                break
            await asyncio.sleep(0.01)
        assert stored is not None and stored.events == tuple(w.events) and not w.finished
        manager.stop(w.id)
        await until(lambda: w.task is not None and w.task.done(), "the end to be stored")
        assert (await store.events(w.id)).events == tuple(w.events)
        await manager.aclose()
    finally:
        await store.aclose()
