"""The run store: probe runs kept on disk, so they survive a restart and a report never changes afterwards.

One embedded SQLite file (stdlib ``sqlite3``) in WAL mode, one writer thread, readers alongside, the schema
version in ``PRAGMA user_version`` with forward migrations (``schema``). Bounded runs keep every request's
outcome (up to ``StoreConfig.max_outcomes_per_run``); every run also keeps per-second aggregates, and watch
runs keep only those. A finished run keeps its endpoint sets and its summary frozen as they were at the end.

Layers: ``records`` (what goes in and comes out), ``db.RunStore`` (the synchronous core, easy to test),
``aio.AsyncRunStore`` and ``aio.RunRecorder`` (for the event loop: batched writes off the loop).

When users outgrow SQLite: one file has one writer, so several dashboard replicas cannot share it (the store
refuses a second writer rather than interleave). Replicas, or runs kept for months across many clusters,
want a server database such as PostgreSQL: the tables map one to one, and what would stay is this package's
interface (``begin`` / ``append`` / ``finish`` / ``mark_interrupted`` / ``prune`` / ``get`` / ``recent`` /
``page`` / ``seconds``) and its records; only ``db`` would be rewritten.
"""

from app.store.aio import AsyncRunStore, RunRecorder
from app.store.config import StoreConfig
from app.store.db import NewerSchema, NotAStore, RunStore, StoreError, StoreLocked
from app.store.events import WatchEvents
from app.store.records import (
    AttributionNote,
    Batch,
    FrozenEndpoints,
    Interrupted,
    Kind,
    Missing,
    PageQuery,
    RunEnd,
    RunPage,
    RunRecord,
    RunStart,
    Status,
    StoredRun,
    TargetFacts,
    Tombstone,
    spec_fields,
)
from app.store.watchfacts import WatchFacts

__all__ = [
    "AsyncRunStore",
    "AttributionNote",
    "Batch",
    "FrozenEndpoints",
    "Interrupted",
    "Kind",
    "Missing",
    "NewerSchema",
    "NotAStore",
    "PageQuery",
    "RunEnd",
    "RunPage",
    "RunRecord",
    "RunRecorder",
    "RunStart",
    "RunStore",
    "Status",
    "StoreConfig",
    "StoreError",
    "StoreLocked",
    "StoredRun",
    "TargetFacts",
    "Tombstone",
    "WatchEvents",
    "WatchFacts",
    "spec_fields",
]
