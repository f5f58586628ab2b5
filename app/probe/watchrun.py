"""A watch: continuous probing of a Service's ClusterIP from this process at a steady rate, until stopped or
its duration is over, while the Service and its endpoints are compared every ``OBSERVE_S`` for changes.

Each request is the probe engine's exchange on a new connection (so kube-proxy's choice shows per request),
attributed as a run's are (calibration, identity rule, the same error kinds). Requests start on a monotonic
schedule (``start + n / rate``), so pacing never drifts; if the process falls more than a second behind, the
missed slots are skipped and counted rather than sent in a burst. In-flight requests are bounded, and on stop
they finish within their timeout, so every request sent is counted as a hit, an unattributed reply or an
error.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from app.domain import EndpointSlice, Origin, Service
from app.probe import wire
from app.probe.attribution import Rule
from app.probe.calibrate import calibrate
from app.probe.engine import Channel, Dial, failure_kind
from app.probe.run import Run, new_run_id
from app.probe.spec import MIN_TIMEOUT_S, ProbeSpec, SpecError, checked_request
from app.probe.stats import Outcome
from app.probe.targets import ClusterView, ProbeProtocol, ProbeTarget, backends
from app.probe.watch import MAX_EVENTS, Event, Measurements, Second, Series, Snapshot, diff, measure, snapshot

log = logging.getLogger(__name__)

OBSERVE_S = 0.1  # how often the Service and its endpoints are compared (the events' time resolution)
# Requests start on a grid: at high rates several start per wake-up instead of one timer per request, and
# their sockets then share the event loop's wake-ups too (measured at 200/s on an idle machine: 0.85
# voluntary sleeps per request and ~400 us CPU with a 20 ms grid, 0.2 and ~200 us with 100 ms, about a
# burst run's). The grid aims at START_BATCH requests a step, between TICK_S and MAX_TICK_S (the events'
# own resolution); each request still starts within one step of its slot and records when it did start.
TICK_S = 0.02
MAX_TICK_S = OBSERVE_S
START_BATCH = 20


def start_grid(rate: float) -> float:
    """The step of the start grid for ``rate`` requests/s."""
    return min(MAX_TICK_S, max(TICK_S, START_BATCH / rate))


MAX_BEHIND_S = 1.0  # fallen further behind the schedule than this: skip the missed slots
MAX_IN_FLIGHT = 512  # sockets one watch may hold open at once


class WatchStatus(enum.StrEnum):
    STARTING = "starting"  # calibrating
    RUNNING = "running"
    DONE = "done"  # its duration is over
    STOPPED = "stopped"  # stopped by a user or by shutdown
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class WatchBounds:
    """A watch's bounds; the values come from ``Settings`` (through the lifespan)."""

    min_rate: float
    max_rate: float
    max_duration_s: float
    max_timeout_s: float
    max_active: int
    kept: int
    ring_s: int  # seconds of per-second detail kept in memory per watch
    max_window_s: int


@dataclass(frozen=True, slots=True)
class WatchSpec:
    namespace: str
    service: str
    port: str
    protocol: ProbeProtocol = ProbeProtocol.HTTP
    rate: float = 20.0  # requests per second
    duration_s: float = 300.0
    window_s: int = 10  # the rolling distribution's span
    method: str = "GET"
    path: str = "/"
    timeout_s: float = 2.0
    identity: str | None = None

    def validated(self, bounds: WatchBounds) -> WatchSpec:
        if not (math.isfinite(self.rate) and bounds.min_rate <= self.rate <= bounds.max_rate):
            raise SpecError(f"rate must be between {bounds.min_rate:g} and {bounds.max_rate:g} requests/s")
        if not (math.isfinite(self.duration_s) and 1 <= self.duration_s <= bounds.max_duration_s):
            raise SpecError(f"duration_s must be between 1 and {bounds.max_duration_s:g}")
        if not 1 <= self.window_s <= bounds.max_window_s:
            raise SpecError(f"window_s must be between 1 and {bounds.max_window_s}")
        if not (math.isfinite(self.timeout_s) and MIN_TIMEOUT_S <= self.timeout_s <= bounds.max_timeout_s):
            raise SpecError(f"timeout_s must be between {MIN_TIMEOUT_S} and {bounds.max_timeout_s:g}")
        method, path = checked_request(self.method, self.path)
        identity = (self.identity or "").strip() or None
        return replace(self, port=str(self.port).strip(), method=method, path=path, identity=identity)

    def probe_spec(self) -> ProbeSpec:
        """The run spec each of the watch's requests is made with (one request per connection)."""
        return ProbeSpec(
            namespace=self.namespace,
            service=self.service,
            port=self.port,
            protocol=self.protocol,
            count=1,
            concurrency=1,
            reuse=False,
            method=self.method,
            path=self.path,
            timeout_s=self.timeout_s,
            identity=self.identity,
            origin=Origin.DASHBOARD,
        )


class SecondSink(Protocol):
    """Where a watch's seconds go once no request can change them (the run store's recorder)."""

    def add_seconds(self, seconds: Sequence[Second]) -> None: ...


Sleep = Callable[[float], Awaitable[None]]


class Watch:
    def __init__(
        self,
        spec: WatchSpec,
        target: ProbeTarget,
        rule: Rule | None,
        view: ClusterView,
        *,
        ring_s: int,
        watch_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.id = watch_id or new_run_id()
        self.spec = spec
        self.target = target
        self._view = view
        self._clock = clock
        self.created = wall()
        self._wall = wall
        # The attribution context: a run that never sends, whose endpoints and calibration the watch uses.
        self.run = Run(self.id, spec.probe_spec(), target, rule, view, clock=clock)
        # A second leaves the ring only once final (handed to the store): every request started in it has
        # ended, at most its timeout after the second is over.
        self.series = Series(max(ring_s, math.ceil(spec.timeout_s) + 3))
        self.events: deque[Event] = deque(maxlen=MAX_EVENTS)
        self.events_dropped = 0
        self.status = WatchStatus.STARTING
        self.error: str | None = None
        self.started = clock()  # reset when probing begins
        self.started_wall: float | None = None
        self.finished_at: float | None = None
        self.skipped = 0  # schedule slots skipped because the process fell behind
        self.in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()  # the requests under way (a strong reference)
        self._room: asyncio.Future[None] | None = None  # the pacer waits here while _tasks is at the cap
        # The timeline's per-second fold is the store's too: a second goes to the sink once it is over and
        # every request started in it has ended (so no late reply can change it).
        self._sink: SecondSink | None = None
        self._open: dict[int, int] = {}  # second -> its requests under way
        self._handed = -1  # the seconds up to this one went to the sink
        self.stop_reason: str | None = None
        self.snapshot: Snapshot | None = None
        self._seen: tuple[Service | None, tuple[EndpointSlice, ...]] | None = None
        self.done = asyncio.Event()
        self._on_finish: list[Callable[[], None]] = []
        self.task: asyncio.Task[None] | None = None
        self.client_pod: str | None = None
        # What each request needs and only changes with the Service: worked out when it changes, not per
        # request (at 200 requests/s the per-request lookups were a measurable part of the watch's CPU).
        self._host_header = wire.host_header(target.address, target.port.port)
        self._pick_rule: tuple[str, int | None] = (target.session_affinity, target.affinity_timeout_s)

    # -- reading
    @property
    def finished(self) -> bool:
        return self.status in (WatchStatus.DONE, WatchStatus.STOPPED, WatchStatus.FAILED)

    @property
    def elapsed_s(self) -> float:
        if self.status is WatchStatus.STARTING:
            return 0.0
        end = self.finished_at if self.finished_at is not None else self._clock()
        return max(0.0, end - self.started)

    @property
    def affinity(self) -> str:
        return (
            self.snapshot.affinity if self.snapshot and self.snapshot.spec else self.target.session_affinity
        )

    @property
    def affinity_timeout_s(self) -> int | None:
        if self.snapshot and self.snapshot.spec:
            value = dict(self.snapshot.spec).get("sessionAffinityTimeoutSeconds", "")
            return int(value) if value.isdigit() else None
        return self.target.affinity_timeout_s

    @property
    def event_count(self) -> int:
        """Events seen so far, the dropped ones included (event ``i`` is the ``i``-th seen, from 0)."""
        return self.events_dropped + len(self.events)

    def events_since(self, count: int) -> list[tuple[int, Event]]:
        """The kept events numbered ``count`` or later, with their numbers."""
        first = self.events_dropped
        return [(first + i, e) for i, e in enumerate(self.events) if first + i >= count]

    def measurements(self) -> Measurements:
        return measure(self.series, self.events)

    # -- running
    async def execute(
        self, dial: Dial, sink: SecondSink | None = None, *, sleep: Sleep = asyncio.sleep
    ) -> None:
        """Calibrate (without an identity rule), then probe until the duration is over or cancelled."""
        run = self.run
        observer: asyncio.Task[None] | None = None
        try:
            run.current()
            if run.rule is None:
                await calibrate(run, self._view, dial)
            self.started = self._clock()
            self.started_wall = self._wall()
            self.status = WatchStatus.RUNNING
            self.observe()
            observer = asyncio.create_task(self._observe_loop(sleep), name=f"watch-observe-{self.id}")
            self._sink = sink
            await self._pace(dial, sleep)
            self.finish(WatchStatus.DONE)
        except asyncio.CancelledError:
            self.finish(WatchStatus.STOPPED)
        except Exception as exc:  # a bug must not leave the watch "running" forever
            log.exception("watch %s failed", self.id)
            self.finish(WatchStatus.FAILED, f"{type(exc).__name__}: {exc}")
        finally:
            if observer is not None:
                observer.cancel()
                await asyncio.gather(observer, return_exceptions=True)
            self.observe()
            self._hand_over(everything=True)  # the requests have all ended (the pacer waited for them)

    def finish(self, status: WatchStatus, error: str | None = None) -> None:
        """End the watch with ``status`` (once: later calls change nothing)."""
        if self.finished:
            return
        self.status = status if self.error is None else WatchStatus.FAILED
        self.error = self.error or error
        self.finished_at = self._clock()
        self.done.set()
        callbacks, self._on_finish = self._on_finish, []
        for callback in callbacks:
            callback()

    def when_finished(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the watch ends (at once if it has)."""
        if self.finished:
            callback()
        else:
            self._on_finish.append(callback)

    def fail(self, message: str) -> None:
        """Stop at the next request with this error (e.g. an endpoint turned to a refused address)."""
        self.error = message

    def observe(self) -> None:
        """Compare the Service and its endpoints with the last look; record what changed."""
        # The cache replaces an object when it changes: if the Service and its slices are the same objects
        # as last time, nothing changed, and the endpoints need not be worked out again.
        service = self._view.service(self.target.service)
        slices = tuple(self._view.slices_for(self.target.service))
        seen = self._seen
        if seen is not None and seen[0] is service and len(seen[1]) == len(slices):
            if all(a is b for a, b in zip(seen[1], slices, strict=True)):
                return
        self._seen = (service, slices)
        # The endpoints requests are attributed among: re-read here, when something changed, rather than
        # by every request every ENDPOINTS_MAX_AGE_S as a run's are (a look every OBSERVE_S is as fresh).
        self.run.current()
        now = snapshot(service, backends(self._view, self.target))
        if now == self.snapshot:
            return
        at = round(self._clock() - self.started, 3) if self.status is not WatchStatus.STARTING else 0.0
        for event in diff(self.snapshot, now, at):
            if len(self.events) == self.events.maxlen:
                self.events_dropped += 1
            self.events.append(event)
        self.snapshot = now
        self._pick_rule = (self.affinity, self.affinity_timeout_s)

    async def _observe_loop(self, sleep: Sleep) -> None:
        # Looks happen on multiples of OBSERVE_S since the start, the start grid's own points (at 200/s
        # its step is OBSERVE_S): the loop then wakes once for both, not once for each at its own phase.
        while True:
            since = self._clock() - self.started
            await sleep((math.floor(since / OBSERVE_S + 1e-9) + 1) * OBSERVE_S - since)
            self.observe()

    async def _pace(self, dial: Dial, sleep: Sleep) -> None:
        spec = self.spec
        run = self.run
        interval = 1.0 / spec.rate
        tick = start_grid(spec.rate)
        end = self.started + spec.duration_s
        cap = min(MAX_IN_FLIGHT, math.ceil(spec.rate * spec.timeout_s) + 1)
        loop = asyncio.get_running_loop()
        # The requests under way are a plain set (each request leaves it as it ends), with a future only
        # while the cap is reached: a semaphore and a done callback per request cost a few microseconds
        # and a loop turn each.
        tasks = self._tasks
        n = 0
        try:
            while self.error is None:
                due = self.started + n * interval
                if due >= end:
                    break
                now = self._clock()
                if due > now:
                    # Wake at the next grid point at or after the slot (the grid is relative to the start).
                    wake = self.started + math.ceil((due - self.started) / tick - 1e-9) * tick
                    await sleep(max(0.0, wake - now))
                    continue
                if now - due > MAX_BEHIND_S:
                    missed = math.floor((now - due) / interval)
                    self.skipped += missed
                    n += missed
                    continue
                while len(tasks) >= cap:
                    self._room = loop.create_future()
                    await self._room
                # Every slot due by now starts now, as one group, with one timer for their timeouts.
                if run.forbidden:  # an endpoint's address is one a probe must not reach (seen by observe)
                    self.fail(run.forbidden)
                    break
                group = _Group(loop)
                while due <= now and due < end and len(tasks) < cap:
                    n += 1
                    task = loop.create_task(self._one(n, dial, group, len(group.tasks)))
                    group.tasks.append(task)
                    group.starts.append(math.inf)
                    tasks.add(task)
                    due = self.started + n * interval
                group.left = len(group.tasks)
                self._hand_over()
        finally:
            # Let the requests under way end by their own timeout, so each one sent is counted.
            if tasks:
                pending = asyncio.gather(*tasks, return_exceptions=True)
                try:
                    await asyncio.shield(pending)
                except asyncio.CancelledError:
                    await pending  # bounded by the requests' timeout
                    raise

    def _expire(self, group: _Group) -> None:
        """The group's timer: end each request that has run for its timeout, and set the timer again for
        the next one due (a request of the group that started later)."""
        group.timer = None
        now = self._clock()
        timeout = self.spec.timeout_s
        later = math.inf
        for i, task in enumerate(group.tasks):
            if task.done() or i in group.timed_out:
                continue
            due = group.starts[i] + timeout
            if due <= now:
                group.timed_out.add(i)
                task.cancel()
            else:
                later = min(later, due)  # math.inf for one not started yet: it sets the timer itself
        if later < math.inf:
            group.timer = group.loop.call_later(later - now, self._expire, group)

    def _hand_over(self, *, everything: bool = False) -> None:
        """Give the sink the seconds that are over and whose requests have all ended."""
        if self._sink is None:
            return
        if everything:
            upto = math.inf
        else:
            upto = math.floor(self._clock() - self.started) - 1
            if self._open:
                upto = min(upto, min(self._open) - 1)
        if upto <= self._handed:
            return
        seconds = [s for s in self.series.seconds(after=self._handed) if s.second <= upto]
        if seconds:
            self._handed = seconds[-1].second if everything else int(upto)
            self._sink.add_seconds(seconds)
        elif not everything:
            self._handed = int(upto)

    async def _one(self, seq: int, dial: Dial, group: _Group, index: int) -> None:
        run = self.run
        self.in_flight += 1
        second = -1
        try:
            host, port = dial(self.target.address, self.target.port.port)
            t0 = self._clock()
            group.starts[index] = t0
            if group.timer is None:
                group.timer = group.loop.call_later(self.spec.timeout_s, self._expire, group)
            at_ms = (t0 - self.started) * 1000.0
            second = max(0, math.floor(at_ms / 1000.0))  # the second Series.add files it under
            self._open[second] = self._open.get(second, 0) + 1
            channel = Channel(
                host,
                port,
                run.spec,
                host_header=self._host_header,
                keep_alive=False,
                next_id=run.next_connection,
            )
            try:
                reply = await channel.exchange(seq)
            except asyncio.CancelledError:
                if index not in group.timed_out:
                    raise  # not this request's timeout: the loop is going away
                outcome = Outcome(
                    seq, None, failure_kind(TimeoutError(), run), (self._clock() - t0) * 1000.0, at_ms=at_ms
                )
            except Exception as exc:
                kind = failure_kind(exc, run)
                outcome = Outcome(seq, None, kind, (self._clock() - t0) * 1000.0, at_ms=at_ms)
            else:
                who = run.who_sent(reply)  # a watch shows no SNAT check: its source addresses are not counted
                outcome = Outcome(
                    seq,
                    who.pod,
                    None,
                    (self._clock() - t0) * 1000.0,
                    reason=who.reason,
                    method=who.method.value if who.method else None,
                    status=reply.status,
                    at_ms=at_ms,
                )
            finally:
                channel.close()
            affinity, timeout_s = self._pick_rule
            self.series.add(outcome, affinity=affinity, timeout_s=timeout_s)
        finally:
            self.in_flight -= 1
            if second >= 0:
                left = self._open[second] - 1
                if left:
                    self._open[second] = left
                else:
                    del self._open[second]
                    self._hand_over()
            self._tasks.discard(group.tasks[index])
            group.left -= 1
            if group.left == 0 and group.timer is not None:
                group.timer.cancel()
                group.timer = None
            room = self._room
            if room is not None and not room.done():
                room.set_result(None)
            self._room = None


class _Group:
    """Requests started together, at one point of the start grid. They share one timer for their timeouts:
    at 200 requests/s a timeout context per request (a timer, and two reads of the running loop and task,
    each a system call here) was a measurable part of a watch's CPU."""

    __slots__ = ("left", "loop", "starts", "tasks", "timed_out", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.tasks: list[asyncio.Task[None]] = []
        self.starts: list[float] = []  # when each request began (math.inf: not yet)
        self.left = 0  # requests not yet ended
        self.timed_out: set[int] = set()  # requests ended by the timer
        self.timer: asyncio.TimerHandle | None = None
