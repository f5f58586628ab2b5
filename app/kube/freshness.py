"""How current the watch cache is, and a cheap liveness check of the apiserver behind it.

A watch that receives nothing is not necessarily stale: a quiet cluster sends no events, and the
apiserver sends a bookmark only about once a minute. Silence alone therefore cannot tell "nothing
happened" from "the connection died" or "etcd stopped". :class:`Liveness` settles it with a small
consistent read (a ``limit=1`` list, answered from etcd) every few seconds: while those succeed, an
open watch stream is as current as the last answer; when they fail, the age of the watch grows from
the last event, bookmark or list it received, and the dashboard says so once it is unusual.

The same check makes recovery prompt. Watchers that failed to connect wait for the next successful
check instead of a long backoff (:meth:`Liveness.next_ok`), and after a failed stretch every watch
that was open through it is restarted with a fresh list (:meth:`Liveness.on_recovery`), since a
connection that lived through a partition may be dead without knowing it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

Ping = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class LivenessConfig:
    interval_s: float = 5.0  # between checks while everything answers
    fast_interval_s: float = 0.5  # between checks while the apiserver does not answer, or a watch waits
    timeout_s: float = 3.0  # one check; an etcd outage makes the read hang, not fail
    stale_after_s: float = 12.0  # a watch older than this is shown as stale


class Liveness:
    """Periodically checks that the apiserver answers a consistent read; ``run()`` until cancelled."""

    def __init__(
        self,
        ping: Ping,
        config: LivenessConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ping = ping
        self.config = config or LivenessConfig()
        self.clock = clock
        self.last_ok: float | None = None
        self.failing_since: float | None = None
        self.last_error: str | None = None
        self.checks = 0
        self._ok = asyncio.Event()  # replaced after each success: waiters see the next one
        self._hurry = asyncio.Event()
        self._waiters = 0
        self._recovery: list[Callable[[float], None]] = []

    def on_recovery(self, callback: Callable[[float], None]) -> None:
        """Call ``callback(failing_since)`` when a check succeeds after failed ones."""
        self._recovery.append(callback)

    async def next_ok(self) -> None:
        """Return after the next successful check (checks run fast while someone waits here)."""
        self._waiters += 1
        self._hurry.set()
        try:
            await self._ok.wait()
        finally:
            self._waiters -= 1

    async def check(self) -> bool:
        """One check; records its outcome and tells waiters and recovery callbacks."""
        self.checks += 1
        try:
            async with asyncio.timeout(self.config.timeout_s):
                await self._ping()
        except Exception as exc:
            text = (
                f"no answer within {self.config.timeout_s:g} s"
                if isinstance(exc, TimeoutError)
                else f"{type(exc).__name__}: {exc}"[:200]
            )
            if self.failing_since is None:
                self.failing_since = self.clock()
                log.warning("apiserver check failed: %s", text)
            self.last_error = text
            return False
        now = self.clock()
        self.last_ok = now
        since, self.failing_since, self.last_error = self.failing_since, None, None
        ok, self._ok = self._ok, asyncio.Event()
        ok.set()
        if since is not None:
            log.info("the apiserver answers again after %.1f s", now - since)
            for callback in self._recovery:
                callback(since)
        return True

    async def run(self) -> None:
        while True:
            ok = await self.check()
            fast = not ok or self._waiters > 0
            self._hurry.clear()
            delay = self.config.fast_interval_s if fast else self.config.interval_s
            try:
                async with asyncio.timeout(delay):
                    await self._hurry.wait()  # a watcher started waiting: check right away
            except TimeoutError:
                pass


@dataclass(frozen=True, slots=True)
class WatchAge:
    """How old what one watch shows is (seconds), for the banner, ``/readyz`` and metrics."""

    resource: str
    scope: str
    age_s: float | None  # None: never listed yet (readiness covers that)
    stale: bool
    why: str | None = None


@dataclass(frozen=True, slots=True)
class FreshnessReport:
    watches: tuple[WatchAge, ...] = ()
    reason: str | None = None  # what the liveness check last said, when it fails

    @property
    def stale(self) -> tuple[WatchAge, ...]:
        return tuple(w for w in self.watches if w.stale)

    @property
    def age_s(self) -> float:
        """The oldest age among stale watches (0 when none is stale)."""
        return max((w.age_s or 0.0 for w in self.stale), default=0.0)

    @property
    def message(self) -> str:
        if not self.stale:
            return ""
        which = ", ".join(w.resource if not w.scope else f"{w.resource} in {w.scope}" for w in self.stale)
        cause = f" (apiserver check: {self.reason})" if self.reason else ""
        return (
            f"Last update {self.age_s:.0f} s ago: what is shown may be out of date. "
            f"Stale watches: {which}{cause}."
        )


def watch_age(
    *,
    resource: str,
    scope: str,
    last_seen: float | None,
    streaming_since: float | None,
    last_ok: float | None,
    now: float,
    stale_after_s: float,
) -> WatchAge:
    """Pure rule: a watch is current as of its last event/bookmark/list, or as of the last successful
    apiserver check made while its stream was open (an open stream on a healthy apiserver misses nothing)."""
    if last_seen is None:
        return WatchAge(resource, scope, None, False)
    fresh_at = last_seen
    if streaming_since is not None and last_ok is not None and last_ok >= streaming_since:
        fresh_at = max(fresh_at, last_ok)
    age = max(0.0, now - fresh_at)
    stale = age > stale_after_s
    why = None
    if stale:
        why = "watch stream open but the apiserver does not answer" if streaming_since else "not connected"
    return WatchAge(resource, scope, round(age, 1), stale, why)


class Aged(Protocol):
    """What a report needs of a watcher (``app.kube.watch.Watcher``)."""

    liveness: Liveness | None

    def age(self, now: float | None = None) -> WatchAge: ...


def report(watchers: Sequence[Aged]) -> FreshnessReport:
    """The age of every watch, and why the apiserver check fails when it does."""
    reason = next((w.liveness.last_error for w in watchers if w.liveness is not None), None)
    return FreshnessReport(tuple(w.age() for w in watchers), reason)
