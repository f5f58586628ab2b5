"""What the running app shares (``request.app.state.svc``), typed, so the web layer needs no
``isinstance`` checks. Built by ``app.lifespan``; read by ``app.web`` through ``app.web.deps``."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from app.config import Settings
from app.domain import ObjectKey
from app.hub import EventHub
from app.kube.actions import AffinityChange, RecordedChange
from app.kube.cache import ServiceCache
from app.kube.metrics import WatchMetrics
from app.kube.watch import EventSource, Watcher
from app.probe.remote import RemoteProber
from app.probe.runner import ProbeRunner
from app.watching import WatchManager


class AffinityPatcher(Protocol):
    async def patch_session_affinity(self, namespace: str, name: str, change: AffinityChange) -> None: ...

    async def record_affinity_change(
        self, namespace: str, name: str, uid: str | None, change: RecordedChange
    ) -> None: ...


class Actions(RemoteProber, AffinityPatcher, Protocol):
    """The writes svcscope may make (``app.kube.actions.KubeActions``; a fake in tests)."""

    async def close(self) -> None: ...


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
