"""The run store for the event loop: writes on one dedicated thread, reads on worker threads.

``AsyncRunStore`` wraps a ``RunStore``. Every write goes to a single writer thread in submission order (one
writer, as SQLite wants); at most ``max_pending`` writes wait at a time, so a slow disk slows the callers
down instead of queueing without bound. Reads run with ``asyncio.to_thread`` on their own connections.

``RunRecorder`` is what a running run talks to. Its ``add`` is a plain, cheap call on the hot path (a list
append); a background task writes the first result as soon as it comes, then what gathered at most every
``flush_s`` seconds (sooner when ``flush_outcomes`` wait), so a 10,000-request run costs a handful of
transactions. What a SIGKILL loses is what came in since the last write: under ``flush_s`` seconds of results,
never a run's first ones (a run killed early must not read "interrupted at 0/N" after it had sent requests).
A failed write never fails the run: the recorder keeps the error in ``failed`` (to show "not saved: ...") and
stops writing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from app.probe.stats import Outcome
from app.probe.watch import Event, Repick, Second
from app.store.aggregate import SecondAggregator
from app.store.config import StoreConfig
from app.store.db import RunStore, StoreError
from app.store.events import WatchEvents
from app.store.records import (
    NEWEST,
    NO_BATCH,
    AttributionNote,
    Batch,
    FrozenEndpoints,
    Interrupted,
    Missing,
    PageQuery,
    RunEnd,
    RunPage,
    RunRecord,
    RunStart,
    StoredRun,
    Tombstone,
)
from app.store.watchfacts import WatchFacts

log = logging.getLogger(__name__)

T = TypeVar("T")

FLUSH_S = 0.5
FLUSH_OUTCOMES = 1000
LATE_MARGIN_S = 1.0  # beyond a request's timeout, how late its outcome may still report


class AsyncRunStore:
    def __init__(self, store: RunStore, *, max_pending: int = 64) -> None:
        self.store = store
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="svcscope-store-writer")
        self._slots = asyncio.Semaphore(max_pending)

    @classmethod
    async def open(
        cls, config: StoreConfig, *, clock: Callable[[], float] = time.time, max_pending: int = 64
    ) -> AsyncRunStore:
        store = await asyncio.to_thread(RunStore.open, config, clock=clock)
        return cls(store, max_pending=max_pending)

    async def aclose(self) -> None:
        """Wait for the writes already submitted, then close the file."""
        await asyncio.to_thread(self._writer.shutdown, wait=True)
        await asyncio.to_thread(self.store.close)

    async def _write(self, fn: Callable[..., T], *args: object) -> T:
        async with self._slots:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._writer, functools.partial(fn, *args))

    # -- writes (in submission order, on the writer thread)
    async def begin(self, start: RunStart) -> None:
        await self._write(self.store.begin, start)

    async def append(self, run_id: str, batch: Batch) -> int:
        return await self._write(self.store.append, run_id, batch)

    async def finish(self, run_id: str, end: RunEnd, last: Batch = NO_BATCH) -> list[Tombstone]:
        """Record the end, then apply retention (a finished run may push an old one out)."""

        def finish_and_prune() -> list[Tombstone]:
            self.store.finish(run_id, end, last)
            return self.store.prune()

        return await self._write(finish_and_prune)

    async def add_events(self, run_id: str, events: Sequence[tuple[int, Event]]) -> None:
        await self._write(self.store.add_events, run_id, events)

    async def add_watch_facts(
        self,
        run_id: str,
        repicks: Sequence[tuple[int, Repick]],
        hits: Sequence[tuple[str, float, float]],
    ) -> None:
        await self._write(self.store.add_watch_facts, run_id, repicks, hits)

    async def mark_interrupted(self) -> list[Interrupted]:
        return await self._write(self.store.mark_interrupted)

    async def prune(self) -> list[Tombstone]:
        return await self._write(self.store.prune)

    # -- reads (concurrent with the writer)
    async def get(self, run_id: str) -> StoredRun | Missing:
        return await asyncio.to_thread(self.store.get, run_id)

    async def record(self, run_id: str) -> RunRecord | Missing:
        return await asyncio.to_thread(self.store.record, run_id)

    async def recent(
        self, limit: int = 50, *, namespace: str | None = None, service: str | None = None
    ) -> list[RunRecord]:
        return await asyncio.to_thread(
            functools.partial(self.store.recent, limit, namespace=namespace, service=service)
        )

    async def page(self, query: PageQuery = NEWEST) -> RunPage | Missing:
        return await asyncio.to_thread(self.store.page, query)

    async def seconds(self, run_id: str, after: int = -1) -> list[Second]:
        return await asyncio.to_thread(self.store.seconds, run_id, after)

    async def events(self, run_id: str) -> WatchEvents:
        return await asyncio.to_thread(self.store.events, run_id)

    async def watch_facts(self, run_id: str) -> WatchFacts:
        return await asyncio.to_thread(self.store.watch_facts, run_id)

    async def used_bytes(self) -> int:
        return await asyncio.to_thread(self.store.used_bytes)

    async def size_bytes(self) -> int:
        return await asyncio.to_thread(self.store.size_bytes)


class RunRecorder:
    """Writes one running run: ``RunRecorder(store, run_id, timeout_s=...)`` after ``store.begin``, then
    ``start()``, ``add()`` per result, ``finish()``. ``keep_outcomes=False`` (watch runs) stores only the
    per-second aggregates."""

    def __init__(
        self,
        store: AsyncRunStore,
        run_id: str,
        *,
        timeout_s: float,
        keep_outcomes: bool = True,
        flush_s: float = FLUSH_S,
        flush_outcomes: int = FLUSH_OUTCOMES,
    ) -> None:
        self.run_id = run_id
        self.failed: str | None = None  # why results are no longer being saved
        self.written = 0  # outcomes handed to the store (stored, or beyond its per-run cap)
        self._store = store
        self._keep = keep_outcomes
        self._flush_s = flush_s
        self._flush_outcomes = flush_outcomes
        self._seconds = SecondAggregator(timeout_s + LATE_MARGIN_S)
        self._final: list[Second] = []  # seconds folded by the caller, final when given (a watch's)
        self._outcomes: list[Outcome] = []
        self._samples: dict[str, str] = {}
        self._endpoints: FrozenEndpoints | None = None
        self._changed: bool | None = None
        self._attribution: AttributionNote | None = None
        self._started: float | None = None
        self._due = asyncio.Event()  # something waits to be written
        self._full = asyncio.Event()  # flush_outcomes wait: write without waiting out the interval
        self._written = asyncio.Condition()
        self._lock = asyncio.Lock()  # one flush at a time, so batches reach the writer in order
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    # -- the hot path: plain calls, nothing awaited
    def add(self, outcome: Outcome, sample: tuple[str, str] | None = None) -> None:
        """One result; ``sample`` is (key, text) of a reply sample worth keeping."""
        if self.failed is not None:  # nothing will be written: do not hold a long run's results in memory
            return
        if self._keep:
            self._outcomes.append(outcome)
        self._seconds.add(outcome)
        if sample is not None:
            self._samples.setdefault(*sample)
        self._due.set()
        if len(self._outcomes) >= self._flush_outcomes:
            self._full.set()

    def add_seconds(self, seconds: Sequence[Second]) -> None:
        """Seconds the caller folded itself and that no request can change any more (a watch's timeline:
        one fold serves the chart and the store, instead of a second fold of every outcome here)."""
        if self.failed is not None or not seconds:
            return
        self._final.extend(seconds)
        self._due.set()

    def note_endpoints(self, endpoints: FrozenEndpoints, changed: bool) -> None:
        """The endpoint sets as they are now (written with the next batch, so an interrupted run has them)."""
        self._endpoints, self._changed = endpoints, changed
        self._due.set()

    def note_attribution(self, attribution: AttributionNote) -> None:
        self._attribution = attribution
        self._due.set()

    def note_started(self, wall_time: float) -> None:
        self._started = wall_time
        self._due.set()

    # -- writing
    def start(self) -> None:
        """Start the background writes (on the running loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"store-{self.run_id}")

    async def _loop(self) -> None:
        while not self._closing and self.failed is None:
            # Idle until something comes, then write it at once: the first results of a run (or the first
            # after a quiet spell) reach the file without waiting for an interval to run out.
            await self._due.wait()
            await self.flush()
            if self._closing:  # finish writes the rest (the flush above may have cleared its wake-up)
                break
            # Then gather for the interval (or until enough outcomes wait), so a busy run writes in batches.
            try:
                async with asyncio.timeout(self._flush_s):
                    await self._full.wait()
            except TimeoutError:
                pass

    def _take(self, closing: bool) -> Batch:
        seconds = self._final + (self._seconds.take_all() if closing else self._seconds.take_closed())
        self._final = []
        batch = Batch(
            outcomes=tuple(self._outcomes),
            seconds=tuple(seconds),
            samples=self._samples,
            endpoints=self._endpoints,
            endpoints_changed=self._changed,
            attribution=self._attribution,
            started=self._started,
        )
        self._outcomes, self._samples = [], {}
        self._endpoints = self._changed = self._attribution = self._started = None
        self._due.clear()
        self._full.clear()
        return batch

    async def flush(self) -> None:
        """Write what gathered since the last write (nothing if nothing did)."""
        async with self._lock:
            if not self._due.is_set() or self.failed is not None:
                return
            batch = self._take(closing=False)
            if batch.empty:
                return
            try:
                await self._store.append(self.run_id, batch)
            except StoreError as exc:
                await self._fail(exc)
                return
            await self._count(len(batch.outcomes))

    async def finish(self, end: RunEnd) -> list[Tombstone]:
        """Stop the background writes and record the end with the last results (one transaction).
        Returns the runs retention deleted to make room."""
        # Let the background task finish its current write instead of cancelling it mid-way.
        self._closing = True
        self._due.set()
        self._full.set()
        if self._task is not None:
            await self._task
        async with self._lock:
            if self.failed is not None:
                return []
            last = self._take(closing=True)
            try:
                gone = await self._store.finish(self.run_id, end, last)
            except StoreError as exc:
                await self._fail(exc)
                return []
            await self._count(len(last.outcomes))
            return gone

    async def wait_written(self, count: int) -> None:
        """Until at least ``count`` outcomes were written (or writing failed)."""
        async with self._written:
            await self._written.wait_for(lambda: self.written >= count or self.failed is not None)

    async def _count(self, n: int) -> None:
        async with self._written:
            self.written += n
            self._written.notify_all()

    async def _fail(self, exc: StoreError) -> None:
        log.error("probe run %s: results are no longer saved: %s", self.run_id, exc.message)
        async with self._written:
            self.failed = exc.message
            self._written.notify_all()
