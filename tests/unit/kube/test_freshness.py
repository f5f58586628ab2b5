"""Staleness: the pure age rule (a table), the apiserver check and its recovery signal."""

from __future__ import annotations

import asyncio

import pytest

from app.kube.freshness import FreshnessReport, Liveness, LivenessConfig, WatchAge, watch_age

STALE_AFTER = 12.0


@pytest.mark.parametrize(
    ("last_seen", "streaming_since", "last_ok", "now", "age", "stale"),
    [
        # A quiet cluster: no event for a minute, but the stream is open and the apiserver answered
        # 2 s ago, so nothing was missed.
        (0.0, 0.0, 58.0, 60.0, 2.0, False),
        # The apiserver (or etcd) stopped answering 20 s ago; the stream is still open: stale from
        # the last successful check.
        (0.0, 0.0, 40.0, 60.0, 20.0, True),
        # An event 3 s ago keeps it current whatever the checks say.
        (57.0, 0.0, 10.0, 60.0, 3.0, False),
        # Not connected (the watch failed): a successful check says nothing about this watch.
        (30.0, None, 59.0, 60.0, 30.0, True),
        # A check that succeeded before the current stream opened does not vouch for it.
        (30.0, 50.0, 45.0, 60.0, 30.0, True),
        # Just at the threshold: not yet stale.
        (48.0, None, None, 60.0, 12.0, False),
        # Never listed: readiness covers that, no age.
        (None, None, 59.0, 60.0, None, False),
    ],
)
def test_watch_age(last_seen, streaming_since, last_ok, now, age, stale):
    got = watch_age(
        resource="services",
        scope="",
        last_seen=last_seen,
        streaming_since=streaming_since,
        last_ok=last_ok,
        now=now,
        stale_after_s=STALE_AFTER,
    )
    assert (got.age_s, got.stale) == (age, stale)
    assert (got.why is not None) == stale


def test_report_message_names_the_stale_watches_and_the_cause():
    report = FreshnessReport(
        (
            WatchAge("services", "", 31.0, True, "x"),
            WatchAge("pods", "shop", 14.0, True, "x"),
            WatchAge("endpointslices", "", 2.0, False),
        ),
        reason="no answer within 3 s",
    )
    assert report.age_s == 31.0 and len(report.stale) == 2
    assert report.message == (
        "Last update 31 s ago: what is shown may be out of date. "
        "Stale watches: services, pods in shop (apiserver check: no answer within 3 s)."
    )
    assert FreshnessReport((WatchAge("pods", "", 1.0, False),)).message == ""


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


async def test_check_records_failures_and_calls_back_on_recovery():
    answers: list[BaseException | None] = [ConnectionRefusedError("refused"), None]

    async def ping() -> None:
        outcome = answers.pop(0)
        if outcome is not None:
            raise outcome

    clock = Clock()
    live = Liveness(ping, LivenessConfig(timeout_s=1.0), clock=clock)
    recovered: list[float] = []
    live.on_recovery(recovered.append)
    assert await live.check() is False
    assert live.failing_since == 100.0 and live.last_error is not None and "refused" in live.last_error
    clock.t = 107.0
    assert await live.check() is True
    assert live.last_ok == 107.0 and live.failing_since is None and live.last_error is None
    assert recovered == [100.0]


async def test_a_hanging_check_times_out():
    async def hang() -> None:
        await asyncio.Event().wait()

    live = Liveness(hang, LivenessConfig(timeout_s=0.01))
    assert await live.check() is False
    assert live.last_error == "no answer within 0.01 s"


async def test_next_ok_wakes_after_the_next_success_and_hurries_the_loop():
    up = asyncio.Event()

    async def ping() -> None:
        if not up.is_set():
            raise ConnectionRefusedError("refused")

    # Slow cadence when healthy; while someone waits, the loop checks at the fast one.
    live = Liveness(ping, LivenessConfig(interval_s=60.0, fast_interval_s=0.01, timeout_s=1.0))
    task = asyncio.create_task(live.run())
    try:
        waiter = asyncio.create_task(live.next_ok())
        for _ in range(200):  # bounded: the loop must fail a few checks first
            if live.checks >= 3:
                break
            await asyncio.sleep(0.005)
        assert not waiter.done()
        up.set()
        await asyncio.wait_for(waiter, 2.0)
        assert live.last_ok is not None
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
