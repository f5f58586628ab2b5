"""Lifespan: builds the Kubernetes client and watchers, wires cache -> hub; tears it all down.

The cache, hub and metrics registry exist from ``create_app`` on (typed, in ``app.state.svc``), so
tests can use a pre-filled cache with ``start_watchers=False`` and no cluster. The watchers only
start inside the lifespan, and teardown closes the hub first (SSE streams end), then cancels and
awaits every task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from app.config import Settings
from app.hub import EventHub
from app.kube.actions import KubeActions, create_actions, reap_leftovers
from app.kube.cache import ALL_NAMESPACES, NAMESPACED_KINDS, NODES_FORBIDDEN, Kind, ServiceCache
from app.kube.client import ApiSource, create_api_client
from app.kube.freshness import Liveness, LivenessConfig
from app.kube.metrics import CacheCollector, WatchAgeCollector, WatchMetrics
from app.kube.watch import EventSource, WatchConfig, Watcher
from app.probe.runner import ProbeRunner
from app.probe.spec import Limits
from app.probe.watchrun import WatchBounds
from app.state import AppState
from app.store import AsyncRunStore, StoreConfig, StoreError, StoreLocked
from app.store.config import DAY_S
from app.store.runs import restored, store_sinks
from app.watching import WatchManager

log = logging.getLogger(__name__)

STORE_RETRY_S = 1.0  # between attempts to open a store another process still holds


def limits_from(settings: Settings) -> Limits:
    """The probe runner's bounds: Settings is their one source."""
    return Limits(
        max_count=settings.probe_max_count,
        max_concurrency=settings.probe_max_concurrency,
        max_in_flight=settings.probe_max_in_flight,
        max_active=settings.probe_max_runs_active,
        kept=settings.probe_runs_kept,
        per_minute=settings.probe_max_runs_per_minute,
        max_timeout_s=settings.probe_max_timeout_s,
        run_deadline_s=settings.probe_run_deadline_s,
    )


def store_config(settings: Settings) -> StoreConfig:
    return StoreConfig(
        Path(settings.store_path),
        max_runs=settings.store_max_runs,
        max_age_s=settings.store_max_age_days * DAY_S,
        max_bytes=settings.store_max_mb * 1024 * 1024,
    )


class StartupError(RuntimeError):
    """svcscope cannot start as configured; the message says why and what to change."""


async def open_store(settings: Settings) -> AsyncRunStore:
    """Open the run store, waiting up to ``store_lock_wait_s`` for a previous process to let go of it
    (a replaced pod may still be stopping while the new one starts on the same volume)."""
    config = store_config(settings)
    deadline = time.monotonic() + settings.store_lock_wait_s
    while True:
        try:
            return await AsyncRunStore.open(config)
        except StoreLocked as exc:
            if time.monotonic() >= deadline:
                raise StartupError(f"run store {config.path}: {exc.message}") from exc
            log.info("run store %s is held by another process; retrying", config.path)
            await asyncio.sleep(STORE_RETRY_S)
        except StoreError as exc:
            raise StartupError(
                f"run store {config.path}: {exc.message} (set SVCSCOPE_STORE_PATH to a writable file, "
                "or to an empty value to keep runs in memory only)"
            ) from exc


async def start_store(state: AppState, runner: ProbeRunner) -> None:
    """Open the store, mark the runs a dead process left "running" as interrupted, apply retention,
    and list the newest runs again; then the runner records every new run there."""
    store = await open_store(state.settings)
    state.store = store
    state.closers.append(store.aclose)  # closed after the runner (closers run in reverse)
    for gone in await store.mark_interrupted():
        log.warning("probe run %s: %s", gone.id, gone.message)
    await store.prune()
    records = await store.recent(runner.limits.kept)
    runner.restore([restored(r) for r in reversed(records)])
    runner.use_sinks(store_sinks(store))


def watch_bounds_from(settings: Settings) -> WatchBounds:
    """A watch's bounds: Settings is their one source."""
    return WatchBounds(
        min_rate=settings.watch_min_rate,
        max_rate=settings.watch_max_rate,
        max_duration_s=settings.watch_max_duration_s,
        max_timeout_s=settings.watch_max_timeout_s,
        max_active=settings.watch_max_active,
        kept=settings.watch_kept,
        ring_s=settings.watch_ring_s,
        max_window_s=settings.watch_max_window_s,
    )


def build_state(
    settings: Settings,
    *,
    cache: ServiceCache | None = None,
    start_watchers: bool = True,
    source: EventSource | None = None,
) -> AppState:
    cache = cache if cache is not None else ServiceCache(settings.namespaces or [""])
    hub = EventHub(coalesce_s=settings.sse_coalesce_s)
    cache.subscribe(hub.publish)
    registry = CollectorRegistry()
    registry.register(CacheCollector(cache))
    return AppState(
        settings=settings,
        cache=cache,
        hub=hub,
        registry=registry,
        watch_metrics=WatchMetrics(registry),
        start_watchers=start_watchers,
        source=source,
    )


async def start_watchers(state: AppState) -> None:
    settings = state.settings
    source = state.source
    if source is None:
        api = await create_api_client(
            kubeconfig=settings.kubeconfig, in_cluster=settings.kubernetes_service_host is not None
        )
        state.closers.append(api.close)
        source = ApiSource(api)
    config = WatchConfig(
        timeout_s=settings.watch_timeout_s,
        inactivity_s=settings.watch_inactivity_s,
        backoff_max_s=settings.watch_backoff_max_s,
    )
    liveness = _liveness(settings, source, state.cache.scopes[0])
    if liveness is not None:
        state.tasks.append(asyncio.create_task(liveness.run(), name="apiserver-liveness"))
    watched = [(kind, scope) for kind in NAMESPACED_KINDS for scope in state.cache.scopes]
    if settings.watch_nodes:
        watched.append((Kind.NODES, ALL_NAMESPACES))
    else:
        state.cache.set_problem(Kind.NODES, ALL_NAMESPACES, NODES_FORBIDDEN, forbidden=True)
    for kind, scope in watched:
        watcher = Watcher(
            source,
            state.cache,
            kind,
            scope,
            config=config,
            metrics=state.watch_metrics,
            liveness=liveness,
        )
        state.watchers.append(watcher)
        state.tasks.append(asyncio.create_task(watcher.run(), name=watcher.name))
    state.registry.register(WatchAgeCollector(state.watchers))


def _liveness(settings: Settings, source: EventSource, scope: str) -> Liveness | None:
    """The apiserver check behind staleness and prompt reconnects (a fake source may not offer one)."""
    ping = getattr(source, "ping", None)
    if ping is None:
        return None

    async def check() -> None:
        await ping(scope)

    return Liveness(
        check,
        LivenessConfig(
            interval_s=settings.watch_check_interval_s,
            timeout_s=settings.watch_check_timeout_s,
            stale_after_s=settings.watch_stale_after_s,
        ),
    )


async def stop(state: AppState) -> None:
    state.hub.close()
    for task in state.tasks:
        task.cancel()
    results = await asyncio.gather(*state.tasks, return_exceptions=True)
    for task, result in zip(state.tasks, results, strict=True):
        if isinstance(result, Exception):
            log.error("task %s ended with %r", task.get_name(), result)
    state.tasks.clear()
    for close in reversed(state.closers):
        try:
            outcome = close()
            if asyncio.iscoroutine(outcome):
                await outcome
        except Exception:  # one failing close must not keep the others from running
            log.exception("closing %r failed", close)
    state.closers.clear()


def begin_shutdown(state: AppState) -> None:
    """End what keeps responses open: SSE subscriptions and running probes."""
    state.hub.close()
    if state.probe_runner is not None:
        state.tasks.append(asyncio.create_task(state.probe_runner.aclose(), name="probe-runner-close"))
    if state.watches is not None:
        state.tasks.append(asyncio.create_task(state.watches.aclose(), name="watches-close"))


def end_streams_on_signal(state: AppState) -> Callable[[], None]:
    """Chain a SIGTERM/SIGINT handler in front of the server's own.

    uvicorn runs the lifespan's shutdown only after every open response has finished, and an SSE
    response never finishes by itself: without this, a pod with a browser tab open would take the
    whole ``--timeout-graceful-shutdown`` to stop. The server's handler still runs, so its graceful
    shutdown proceeds as usual. Returns a function that puts the previous handlers back.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signals are only delivered to the main thread (e.g. not under TestClient)
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        loop.call_soon_threadsafe(begin_shutdown, state)
        chained = previous[signum]
        if callable(chained):
            chained(signum, frame)

    for sig in (signal.SIGTERM, signal.SIGINT):
        current = signal.getsignal(sig)
        if callable(current):  # only in front of a server that handles the signal itself
            previous[sig] = current
            signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: AppState = app.state.svc
    try:
        if state.start_watchers:
            await start_watchers(state)
        # The runner probes from this process (or, with other origins, through the actions client);
        # stop() cancels its runs.
        settings = state.settings
        actions = state.actions  # a test seam: an actions object set before startup is used as is
        if actions is None:
            actions = await create_actions(settings)  # None unless a write (origin, patch) is enabled
            if actions is not None:
                state.closers.append(actions.close)
                state.actions = actions
        origins = settings.probe_origins
        if isinstance(actions, KubeActions) and origins:
            # Probe pods of a killed predecessor (same pod, restarted container) would run to their deadline.
            state.tasks.append(asyncio.create_task(reap_leftovers(actions), name="probe-pod-reaper"))
        runner = ProbeRunner(
            state.cache,
            limits_from(settings),
            remote=actions if origins else None,
            origins=origins,
            dashboard_pod=settings.pod_name,
            dashboard_ip=settings.pod_ip,
            dashboard_node=settings.node_name,
            probe_pod_namespace=settings.probe_pod_namespace,
        )
        if settings.store_path:
            try:
                await start_store(state, runner)
            except StartupError as exc:
                log.error("%s", exc)
                raise
        state.probe_runner = runner
        # Runs end (and record their end) before the store closes.
        state.closers.append(runner.aclose)
        if state.watches is None:  # a test may set its own first
            state.watches = WatchManager(
                state.cache,
                watch_bounds_from(settings),
                store=state.store,
                dashboard_pod=settings.pod_name,
                dashboard_ip=settings.pod_ip,
                dashboard_node=settings.node_name,
            )
        state.closers.append(state.watches.aclose)
        state.closers.append(end_streams_on_signal(state))
        yield
    finally:
        await stop(state)
