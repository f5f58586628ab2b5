"""The list/watch state machine against a scripted fake event source."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.domain import ObjectKey
from app.kube.cache import Kind, ServiceCache
from app.kube.freshness import Liveness, LivenessConfig
from app.kube.watch import ApiError, ListResult, WatchConfig, Watcher, backoff_delay, read_json_lines
from tests.unit.kube.objects import svc

HANG = object()  # the watch stream goes silent


class FakeSource:
    def __init__(self, lists: list[Any], watches: list[list[Any]]) -> None:
        self.lists = deque(lists)
        self.watches = deque(watches)
        self.calls: list[tuple[str, str, str]] = []

    async def list(self, kind: Kind, namespace: str) -> ListResult:
        self.calls.append(("list", namespace, ""))
        item = self.lists.popleft()
        if isinstance(item, Exception):
            raise item
        assert isinstance(item, ListResult)
        return item

    async def watch(self, kind: Kind, namespace: str, resource_version: str, timeout_s: int):
        self.calls.append(("watch", namespace, resource_version))
        for item in self.watches.popleft():
            if item is HANG:
                await asyncio.Event().wait()
            if isinstance(item, Exception):
                raise item
            yield item


def ev(etype: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"type": etype, "object": obj}


def bookmark(rv: str) -> dict[str, Any]:
    return ev("BOOKMARK", {"kind": "Service", "metadata": {"resourceVersion": rv}})


GONE_EVENT = ev(
    "ERROR", {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version"}
)


def make(source: FakeSource, scope: str = "", **config: Any) -> tuple[Watcher, ServiceCache, list[float]]:
    cache = ServiceCache([scope])
    sleeps: list[float] = []

    async def sleep(d: float) -> None:
        sleeps.append(d)

    w = Watcher(
        source, cache, Kind.SERVICES, scope, config=WatchConfig(**config), sleep=sleep, rand=lambda: 1.0
    )
    return w, cache, sleeps


def names(cache: ServiceCache) -> list[str]:
    return [s.key.name for s in cache.services()]


async def test_list_then_watch_applies_events_and_follows_resource_versions():
    source = FakeSource(
        [ListResult([svc("a", rv="10")], "100")],
        [
            [
                ev("ADDED", svc("b", rv="101")),
                ev("MODIFIED", svc("a", rv="102", labels={"x": "y"})),
                bookmark("150"),
                ev("DELETED", svc("b", rv="151")),
                ev("WEIRD", svc("c")),  # unknown event type: skipped
            ],
            [],
        ],
    )
    w, cache, _ = make(source)
    await w.step()
    assert cache.status(Kind.SERVICES, "").synced and names(cache) == ["a"]
    assert cache.service(ObjectKey("default", "a")).labels == {"x": "y"}  # type: ignore[union-attr]
    assert w.resource_version == "151"
    await w.step()  # the server closed the watch: watch again from the last rv, no re-list
    assert source.calls == [("list", "", ""), ("watch", "", "100"), ("watch", "", "151")]


@pytest.mark.parametrize("gone", [GONE_EVENT, ApiError(410, "Gone", "too old")], ids=["event", "status"])
async def test_410_relists_and_replaces_the_store(gone):
    source = FakeSource(
        [ListResult([svc("a"), svc("b")], "100"), ListResult([svc("b"), svc("c")], "300")],
        [[ev("ADDED", svc("x", rv="101")), gone], [bookmark("301")]],
    )
    w, cache, _ = make(source)
    await w.step()
    assert w.resource_version is None
    assert names(cache) == ["a", "b", "x"]  # kept until the re-list replaces it
    await w.step()
    assert names(cache) == ["b", "c"]
    assert [c[0] for c in source.calls] == ["list", "watch", "list", "watch"]
    assert w.lists == 2 and w.resource_version == "301"


async def test_errors_back_off_exponentially_capped_and_recover():
    err = ApiError(500, "InternalError", "etcd")
    source = FakeSource(
        [ConnectionRefusedError("refused")] * 3 + [err] * 5 + [ListResult([svc("a")], "5")],
        [[bookmark("6")]],
    )
    w, cache, sleeps = make(source, backoff_base_s=1.0, backoff_max_s=8.0)
    for _ in range(9):
        await w.step()
    assert sleeps == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0]
    assert cache.status(Kind.SERVICES, "").synced and names(cache) == ["a"]
    assert cache.problems() == []  # cleared by the successful list
    assert w.attempt == 0  # reset by the first watch event


async def test_repeated_failures_become_a_visible_problem():
    source = FakeSource([OSError("down"), OSError("down")], [])
    w, cache, _ = make(source)
    await w.step()
    assert cache.problems() == []  # one blip is not worth a banner
    await w.step()
    assert "interrupted" in cache.problems()[0].message


async def test_forbidden_is_recorded_not_raised_and_counts_as_settled():
    source = FakeSource(
        [ApiError(403, "Forbidden", 'services is forbidden: User "x" cannot list resource "services"')], []
    )
    w, cache, sleeps = make(source, scope="secret", forbidden_retry_s=60.0)
    await w.step()
    (problem,) = cache.problems()
    assert (
        problem.scope == "secret"
        and "Forbidden" in problem.message
        and "namespace 'secret'" in problem.message
    )
    assert cache.status(Kind.SERVICES, "secret").settled  # /readyz does not wait for it forever
    assert sleeps == [60.0]


async def test_inactivity_timeout_reconnects_from_the_same_resource_version():
    source = FakeSource([ListResult([], "7")], [[bookmark("8"), HANG], [bookmark("9")]])
    w, _, sleeps = make(source, inactivity_s=0.05)
    await w.step()
    assert w.resource_version == "8" and len(sleeps) == 1
    await w.step()
    assert source.calls[-1] == ("watch", "", "8") and w.resource_version == "9"


async def test_empty_watch_streams_do_not_hot_loop():
    source = FakeSource([ListResult([], "1")], [[], [], []])
    w, _, sleeps = make(source)
    for _ in range(3):
        await w.step()
    assert len(sleeps) == 2  # the first empty close is free, then backoff


def test_backoff_delay_has_jitter_within_half_to_full():
    cfg = WatchConfig(backoff_base_s=1.0, backoff_max_s=30.0)
    assert backoff_delay(3, cfg, lambda: 0.0) == 4.0
    assert backoff_delay(3, cfg, lambda: 0.999) < 8.0
    assert backoff_delay(100, cfg, lambda: 1.0) == 30.0


async def test_read_json_lines_splits_across_chunks():
    async def chunks() -> AsyncIterator[bytes]:
        for part in (b'{"a": 1}\n{"b"', b": 2}\n\n", b'{"c": 3}'):
            yield part

    assert [x async for x in read_json_lines(chunks())] == [{"a": 1}, {"b": 2}, {"c": 3}]


async def test_run_is_cancellable():
    source = FakeSource([ListResult([], "1")], [[HANG]])
    cache = ServiceCache()
    w = Watcher(source, cache, Kind.SERVICES)
    synced = asyncio.Event()
    cache.subscribe(lambda _: synced.set() if cache.status(Kind.SERVICES, "").synced else None)
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(synced.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- with the apiserver check (app.kube.freshness.Liveness)


class Switch:
    """A ping that fails until ``up`` is set."""

    def __init__(self) -> None:
        self.up = False

    async def __call__(self) -> None:
        if not self.up:
            raise ConnectionRefusedError("refused")


def make_live(
    source: FakeSource, ping: Switch, **config: Any
) -> tuple[Watcher, ServiceCache, list[float], Liveness]:
    cache = ServiceCache([""])
    sleeps: list[float] = []

    async def sleep(d: float) -> None:
        sleeps.append(d)

    live = Liveness(ping, LivenessConfig(timeout_s=1.0, stale_after_s=12.0))
    w = Watcher(
        source,
        cache,
        Kind.SERVICES,
        "",
        config=WatchConfig(**config),
        sleep=sleep,
        rand=lambda: 1.0,
        liveness=live,
    )
    return w, cache, sleeps, live


async def wait_until(condition: Any, what: str) -> None:
    for _ in range(500):  # bounded poll of the event loop, no wall-clock sleeps
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never: {what}")


async def test_connection_refused_waits_for_the_apiserver_instead_of_the_backoff():
    """After an apiserver restart the watch reconnects as soon as a check succeeds, however many
    attempts failed before (no 15 s backoff to wait out)."""
    ping = Switch()
    source = FakeSource([ConnectionRefusedError("refused")] * 6 + [ListResult([svc("a")], "5")], [[HANG]])
    w, cache, sleeps, live = make_live(source, ping, backoff_base_s=1.0, backoff_max_s=30.0)
    for _ in range(5):
        step = asyncio.create_task(w.step())
        await wait_until(lambda: live._waiters == 1, "the watcher waits for the apiserver")
        assert not step.done()
        await live.check()  # still down: nobody is woken
        await asyncio.sleep(0)
        assert not step.done()
        ping.up = True
        await live.check()  # it answers: the watcher retries at once
        await asyncio.wait_for(step, 1)
        ping.up = False
    assert sleeps == []  # never slept a backoff
    assert w.attempt == 0
    assert "once the apiserver answers" in cache.problems()[0].message


async def test_failures_while_the_apiserver_answers_back_off_as_before():
    ping = Switch()
    ping.up = True
    err = ApiError(500, "InternalError", "etcd")
    source = FakeSource([ConnectionResetError("reset"), err, err, ListResult([], "5")], [[bookmark("6")]])
    w, _, sleeps, _ = make_live(source, ping, backoff_base_s=1.0, backoff_max_s=8.0)
    for _ in range(4):
        await w.step()
    assert sleeps == [1.0, 2.0, 4.0]


async def test_a_watch_open_through_an_outage_is_restarted_with_a_fresh_list():
    clock = [100.0]
    ping = Switch()
    ping.up = True
    source = FakeSource([ListResult([svc("a")], "5"), ListResult([svc("b")], "9")], [[HANG], [HANG]])
    w, cache, sleeps, live = make_live(source, ping)
    w.clock = live.clock = lambda: clock[0]
    step = asyncio.create_task(w.step())
    await wait_until(lambda: w.streaming_since is not None, "the watch is open")
    await live.check()
    assert not w.age().stale
    clock[0] = 110.0
    ping.up = False
    await live.check()  # the apiserver stops answering; the stream stays silently open
    clock[0] = 125.0
    age = w.age()
    assert age.stale and age.age_s == 25.0  # since the last successful check
    assert age.why is not None and "does not answer" in age.why
    assert not step.done()
    ping.up = True
    await live.check()  # answers again: the silent stream is abandoned
    await asyncio.wait_for(step, 1)
    assert w.resource_version is None and sleeps == []
    await asyncio.wait_for(asyncio.shield(asyncio.create_task(_one_list(w))), 1)
    assert names(cache) == ["b"] and not w.age().stale


async def _one_list(w: Watcher) -> None:
    step = asyncio.create_task(w.step())
    await wait_until(lambda: w.streaming_since is not None, "the second watch is open")
    step.cancel()
    with pytest.raises(asyncio.CancelledError):
        await step


async def test_a_watch_that_heard_from_the_apiserver_after_the_outage_began_is_left_alone():
    clock = [100.0]
    ping = Switch()
    source = FakeSource([ListResult([svc("a")], "5")], [[HANG]])
    w, _, _, live = make_live(source, ping)
    w.clock = live.clock = lambda: clock[0]
    await live.check()  # failing since 100
    step = asyncio.create_task(w.step())  # lists at 100 (not before the outage began), then watches
    await wait_until(lambda: w.streaming_since is not None, "the watch is open")
    ping.up = True
    await live.check()
    await asyncio.sleep(0)
    assert not step.done() and w.resource_version == "5"
    step.cancel()
    with pytest.raises(asyncio.CancelledError):
        await step
