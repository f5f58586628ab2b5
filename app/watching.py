"""Watches of this process: admits them (bounds, enabled target), keeps the recent ones, stops them, and
stores each one's per-second aggregates and cluster events in the run store when there is one (memory only
when not).

A watch runs as a task of its own: it does not depend on anyone viewing it, so it survives the browser
closing, and several viewers read the same ``Watch``. ``aclose`` stops them all on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from app.domain import ObjectKey, Origin
from app.probe.engine import Dial
from app.probe.spec import RunLimitError, identity_rule
from app.probe.targets import ClusterView, resolve
from app.probe.watchrun import Watch, WatchBounds, WatchSpec, WatchStatus
from app.store import (
    AsyncRunStore,
    AttributionNote,
    FrozenEndpoints,
    Kind,
    RunEnd,
    RunRecorder,
    RunStart,
    StoreError,
    TargetFacts,
    spec_fields,
)

log = logging.getLogger(__name__)

STORED_STATUS = {
    WatchStatus.DONE: "done",
    WatchStatus.STOPPED: "cancelled",
    WatchStatus.FAILED: "failed",
}


EVENTS_FLUSH_S = 1.0


class FactsWriter:
    """The part of ``EventWriter`` for facts finer than a second: new re-picks and the pods whose first or
    last hit moved since the last write (first/last hits to the millisecond)."""

    def __init__(self, store: AsyncRunStore, watch: Watch) -> None:
        self._store = store
        self._watch = watch
        self.written = 0  # re-picks numbered below this are stored
        self._hits: dict[str, tuple[float, float]] = {}  # pod -> (first, last) as stored
        self.failed: str | None = None

    async def flush(self) -> None:
        if self.failed is not None:
            return
        series = self._watch.series
        repicks = series.repicks_since(self.written)
        moved = [
            (pod, first, last)
            for pod, first in series.first_hit.items()
            if self._hits.get(pod) != (first, last := series.last_hit.get(pod, first))
        ]
        if not repicks and not moved:
            return
        try:
            await self._store.add_watch_facts(self._watch.id, repicks, moved)
        except StoreError as exc:
            log.error("watch %s: its re-picks are no longer saved: %s", self._watch.id, exc.message)
            self.failed = exc.message
            return
        if repicks:
            self.written = repicks[-1][0] + 1
        self._hits.update((pod, (first, last)) for pod, first, last in moved)


class EventWriter:
    """Writes a running watch's new cluster events, ClientIP re-picks and moved first/last hits to the
    store, about once a second (nothing when none came); a failed write is logged and ends the writing,
    never the watch."""

    def __init__(self, store: AsyncRunStore, watch: Watch) -> None:
        self._store = store
        self._watch = watch
        self.written = 0  # events numbered below this are stored
        self.facts = FactsWriter(store, watch)
        self.failed: str | None = None

    async def run(self) -> None:
        while self.failed is None:
            await asyncio.sleep(EVENTS_FLUSH_S)
            await self.flush()

    async def flush(self) -> None:
        await self.facts.flush()
        new = self._watch.events_since(self.written)
        if not new or self.failed is not None:
            return
        try:
            await self._store.add_events(self._watch.id, new)
        except StoreError as exc:
            log.error("watch %s: its events are no longer saved: %s", self._watch.id, exc.message)
            self.failed = exc.message
            return
        self.written = new[-1][0] + 1


class WatchManager:
    def __init__(
        self,
        view: ClusterView,
        bounds: WatchBounds,
        *,
        store: AsyncRunStore | None = None,
        dial: Dial | None = None,
        clock: Callable[[], float] = time.monotonic,
        dashboard_pod: str | None = None,
        dashboard_ip: str | None = None,
        dashboard_node: str | None = None,
    ) -> None:
        """``dial`` maps a checked address to the socket address to connect to (a test seam);
        ``dashboard_ip``/``dashboard_node`` are this process's (the watches' client: its verdict)."""
        self.view = view
        self.bounds = bounds
        self.store = store
        self._dial: Dial = dial or (lambda host, port: (host, port))
        self._clock = clock
        self._dashboard_pod = dashboard_pod
        self.dashboard_ip = dashboard_ip
        self.dashboard_node = dashboard_node
        self._watches: OrderedDict[str, Watch] = OrderedDict()
        self.not_saved: dict[str, str] = {}  # watch id -> why its aggregates are not (all) stored
        self._closed = False

    def get(self, watch_id: str) -> Watch | None:
        return self._watches.get(watch_id)

    def watches(self) -> list[Watch]:
        return list(reversed(self._watches.values()))

    @property
    def active(self) -> int:
        return sum(1 for w in self._watches.values() if not w.finished)

    def start(self, spec: WatchSpec) -> Watch:
        """Validate and start a watch; raises SpecError, TargetError or RunLimitError."""
        if self._closed:
            raise RunLimitError("the dashboard is shutting down")
        spec = spec.validated(self.bounds)
        target = resolve(self.view, ObjectKey(spec.namespace, spec.service), spec.port, spec.protocol)
        rule = identity_rule(spec.identity, target.identity_annotation)
        if self.active >= self.bounds.max_active:
            raise RunLimitError(f"{self.active} watches are running (limit {self.bounds.max_active})")
        watch = Watch(spec, target, rule, self.view, ring_s=self.bounds.ring_s, clock=self._clock)
        watch.client_pod = self._dashboard_pod
        self._watches[watch.id] = watch
        self._evict()
        watch.task = asyncio.create_task(self._execute(watch), name=f"watch-{watch.id}")
        # A task cancelled before it ran (or while the store recorded its start) never reaches the watch's
        # own handlers: it must still end as stopped, not stay "starting" and count as active forever.
        watch.task.add_done_callback(lambda _: watch.finish(WatchStatus.STOPPED))
        return watch

    def stop(self, watch_id: str) -> bool:
        watch = self._watches.get(watch_id)
        if watch is None or watch.finished or watch.task is None:
            return False
        watch.task.cancel()
        return True

    async def aclose(self) -> None:
        self._closed = True
        tasks = [w.task for w in self._watches.values() if w.task is not None and not w.task.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _evict(self) -> None:
        while len(self._watches) > self.bounds.kept:
            victim = next((k for k, w in self._watches.items() if w.finished), None)
            if victim is None:
                return
            del self._watches[victim]
            self.not_saved.pop(victim, None)

    async def _execute(self, watch: Watch) -> None:
        recorder = await self._begin(watch)
        events = EventWriter(self.store, watch) if recorder is not None and self.store is not None else None
        writing = asyncio.create_task(events.run(), name=f"watch-events-{watch.id}") if events else None
        try:
            await watch.execute(self._dial, recorder)
        finally:
            if writing is not None:
                writing.cancel()
                await asyncio.gather(writing, return_exceptions=True)
            if recorder is not None:
                # The last events and re-picks, then the end (an ended run takes no more rows): one piece
                # that a cancel (shutdown) cannot cut between its writes, waited for even then.
                closing = asyncio.ensure_future(self._close(watch, recorder, events))
                try:
                    await asyncio.shield(closing)
                except asyncio.CancelledError:
                    await closing  # bounded: a few store writes
                    raise

    async def _close(self, watch: Watch, recorder: RunRecorder, events: EventWriter | None) -> None:
        if events is not None:
            await events.flush()
        await self._end(watch, recorder)

    async def _begin(self, watch: Watch) -> RunRecorder | None:
        if self.store is None:
            return None
        spec = watch.spec
        try:
            await self.store.begin(
                RunStart(
                    id=watch.id,
                    created=watch.created,
                    target=TargetFacts.of(watch.target),
                    spec=spec_fields(spec),
                    total=0,
                    concurrency=1,
                    reuse=False,
                    origin=Origin.DASHBOARD.value,
                    kind=Kind.WATCH,
                    client_pod=watch.client_pod,
                )
            )
        except StoreError as exc:
            self.not_saved[watch.id] = exc.message
            return None
        recorder = RunRecorder(self.store, watch.id, timeout_s=spec.timeout_s, keep_outcomes=False)
        recorder.start()
        return recorder

    async def _end(self, watch: Watch, recorder: RunRecorder) -> None:
        run = watch.run
        cal = run.calibration
        recorder.note_attribution(
            AttributionNote(cal.mode.value, cal.note, run.rule.label if run.rule else None)
        )
        if watch.started_wall is not None:
            recorder.note_started(watch.started_wall)
        endpoints = FrozenEndpoints(current=run.current(), known=tuple(run.known.values()))
        try:
            await recorder.finish(
                RunEnd(
                    status=STORED_STATUS.get(watch.status, "failed"),
                    finished=time.time(),
                    elapsed_s=watch.elapsed_s,
                    endpoints=endpoints,
                    endpoints_changed=run.endpoints_changed,
                    summary=None,
                    error=watch.error,
                )
            )
        except Exception as exc:  # storing must never break a watch's end
            log.error("watch %s: not saved at its end: %r", watch.id, exc)
        if recorder.failed is not None:
            self.not_saved[watch.id] = recorder.failed
