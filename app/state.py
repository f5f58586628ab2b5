"""What the running app shares (``request.app.state.svc``), typed, so the web layer needs no
``isinstance`` checks. Built by ``app.lifespan``; read by ``app.web`` through ``app.web.deps``."""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

from prometheus_client import CollectorRegistry

from app.config import Settings
from app.domain import ObjectKey
from app.hub import EventHub
from app.kube.actions import AffinityChange, RecordedChange
from app.kube.cache import ServiceCache
from app.kube.metrics import WatchMetrics
from app.kube.watch import EventSource, Watcher
from app.probe.checks import Limiter
from app.probe.fanout import FanoutBook
from app.probe.remote import RemoteProber
from app.probe.run import Run
from app.probe.runner import ProbeRunner
from app.store import AsyncRunStore, Missing
from app.store.runs import restored
from app.watching import WatchManager

T = TypeVar("T")

# Without a store, a run is only found while this process keeps it in memory.
NOT_KEPT = "no such run: runs are kept in memory only (no run store is configured) and this one is gone"


class AffinityPatcher(Protocol):
    async def patch_session_affinity(self, namespace: str, name: str, change: AffinityChange) -> None: ...

    async def record_affinity_change(
        self, namespace: str, name: str, uid: str | None, change: RecordedChange
    ) -> None: ...


class Actions(RemoteProber, AffinityPatcher, Protocol):
    """The writes svcscope may make (``app.kube.actions.KubeActions``; a fake in tests)."""

    async def close(self) -> None: ...


class FragmentCache:
    """What many viewers would each compute or render, done once and shared (e.g. a run's final block:
    one render however many tabs follow the run); the least recently used go first beyond ``size``."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self.renders = 0  # how many times something was actually made (for tests and benches)
        self._items: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable, make: Callable[[], T]) -> T:
        if key in self._items:
            self._items.move_to_end(key)
            return cast(T, self._items[key])
        value = make()
        self.renders += 1
        self.put(key, value)
        return value

    def put(self, key: Hashable, value: Any) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


@dataclass
class AppState:
    settings: Settings
    cache: ServiceCache
    hub: EventHub
    registry: CollectorRegistry
    watch_metrics: WatchMetrics
    start_watchers: bool = True
    # Test seam: an EventSource to use instead of the real apiserver client.
    source: EventSource | None = None
    watchers: list[Watcher] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    closers: list[Callable[[], Any]] = field(default_factory=list)
    # Set by the lifespan; None before startup and in apps that never start.
    probe_runner: ProbeRunner | None = None
    watches: WatchManager | None = None  # set by the lifespan, like the runner
    # Only when a write is enabled (affinity patch, other probe origins); a test may set a fake first.
    actions: Actions | None = None
    # Session affinity changes made from this dashboard, newest first, per Service (app.web.affinity).
    affinity_changes: dict[ObjectKey, deque[RecordedChange]] = field(default_factory=dict)
    # The run store (None: SVCSCOPE_STORE_PATH is empty); opened by the lifespan.
    store: AsyncRunStore | None = None
    fragments: FragmentCache = field(default_factory=FragmentCache)
    fanouts: FanoutBook = field(default_factory=FanoutBook)  # many-client runs (app.web.fanout)
    # Ping/TCP/DNS check runs started from the Service pages (bounded per minute like probe runs).
    check_limiter: Limiter = field(default_factory=Limiter)
    # Open live streams per run: a run watched by many paces its updates (app.web.probes.run_interval).
    run_viewers: Counter[str] = field(default_factory=Counter)

    async def find_run(self, run_id: str) -> Run | Missing:
        """A run of this process, or one read back from the store, or why there is none."""
        runner = self.probe_runner
        run = runner.get(run_id) if runner is not None else None
        if run is not None and run.complete:
            return run
        if self.store is None:
            return run if run is not None else Missing(run_id, NOT_KEPT)
        found = await self.store.get(run_id)
        if isinstance(found, Missing):
            return run if run is not None else found
        return restored(found)
