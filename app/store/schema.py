"""The database layout and its forward migrations.

``PRAGMA user_version`` holds the schema version. ``MIGRATIONS[i]`` takes a database from version ``i`` to
``i + 1`` and runs in one transaction together with the version bump, so a crash mid-migration leaves the
old version intact. Append a migration for every change; never edit one that has shipped. A file with a
version above ``VERSION`` was written by a newer svcscope and is refused rather than guessed at.
"""

from __future__ import annotations

# Marks the file as a svcscope run store (``PRAGMA application_id``), so another program's SQLite file at
# the configured path is refused instead of being written into. ASCII "svcs".
APPLICATION_ID = 0x73766373

_V1 = (
    # A run. ``n`` is a compact key for the per-request tables; ``id`` is what URLs use.
    """CREATE TABLE runs (
        n INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        created REAL NOT NULL,
        namespace TEXT NOT NULL,
        service TEXT NOT NULL,
        address TEXT NOT NULL,
        port INTEGER NOT NULL,
        port_name TEXT,
        protocol TEXT NOT NULL,
        session_affinity TEXT NOT NULL,
        affinity_timeout_s INTEGER,
        spec TEXT NOT NULL,
        total INTEGER NOT NULL,
        concurrency INTEGER NOT NULL,
        reuse INTEGER NOT NULL,
        origin TEXT NOT NULL,
        client_pod TEXT,
        client_ip TEXT,
        status TEXT NOT NULL,
        error TEXT,
        started REAL,
        finished REAL,
        elapsed_s REAL,
        attribution_mode TEXT,
        attribution_note TEXT,
        rule TEXT,
        endpoints_changed INTEGER NOT NULL DEFAULT 0,
        first_reply_ms REAL,
        outcomes_stored INTEGER NOT NULL DEFAULT 0,
        samples TEXT NOT NULL DEFAULT '{}',
        summary TEXT
    ) STRICT""",
    "CREATE INDEX runs_created ON runs (created)",
    "CREATE INDEX runs_service ON runs (namespace, service, created)",
    "CREATE INDEX runs_status ON runs (status)",
    # The endpoint sets a report is measured against: role 'current' (at the end) and 'known' (ever seen).
    """CREATE TABLE endpoints (
        run INTEGER NOT NULL REFERENCES runs (n) ON DELETE CASCADE,
        role TEXT NOT NULL,
        idx INTEGER NOT NULL,
        pod TEXT,
        ip TEXT NOT NULL,
        port INTEGER,
        node TEXT,
        ready INTEGER NOT NULL,
        serving INTEGER NOT NULL,
        terminating INTEGER NOT NULL,
        PRIMARY KEY (run, role, idx)
    ) STRICT, WITHOUT ROWID""",
    """CREATE TABLE outcomes (
        run INTEGER NOT NULL REFERENCES runs (n) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        pod TEXT,
        error TEXT,
        latency_ms REAL,
        connection INTEGER NOT NULL,
        reason TEXT,
        method TEXT,
        status INTEGER,
        at_ms REAL NOT NULL,
        PRIMARY KEY (run, seq)
    ) STRICT, WITHOUT ROWID""",
    """CREATE TABLE seconds (
        run INTEGER NOT NULL REFERENCES runs (n) ON DELETE CASCADE,
        second INTEGER NOT NULL,
        requests INTEGER NOT NULL,
        unattributed INTEGER NOT NULL,
        p50_ms REAL,
        p95_ms REAL,
        PRIMARY KEY (run, second)
    ) STRICT, WITHOUT ROWID""",
    """CREATE TABLE second_hits (
        run INTEGER NOT NULL REFERENCES runs (n) ON DELETE CASCADE,
        second INTEGER NOT NULL,
        pod TEXT NOT NULL,
        hits INTEGER NOT NULL,
        PRIMARY KEY (run, second, pod)
    ) STRICT, WITHOUT ROWID""",
    """CREATE TABLE second_errors (
        run INTEGER NOT NULL REFERENCES runs (n) ON DELETE CASCADE,
        second INTEGER NOT NULL,
        kind TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (run, second, kind)
    ) STRICT, WITHOUT ROWID""",
    # Ids deleted by retention, so an old link says why it is gone (bounded: the oldest are forgotten).
    """CREATE TABLE tombstones (
        id TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        at REAL NOT NULL
    ) STRICT""",
    "CREATE INDEX tombstones_at ON tombstones (at)",
)

# -- watch events: the cluster's changes a watch saw (endpoints added, Ready, terminating, removed; Service
# spec fields), so a stored watch shows its markers after a restart. ``idx`` numbers a watch's events from 0
# in the order seen; only the newest ``app.probe.watch.MAX_EVENTS`` per watch are kept (``app.store.events``).
_WATCH_EVENTS = (
    """CREATE TABLE watch_events (
        run INTEGER NOT NULL REFERENCES runs (n) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        at_s REAL NOT NULL,
        kind TEXT NOT NULL,
        text TEXT NOT NULL,
        pod TEXT,
        field TEXT,
        before_value TEXT,
        after_value TEXT,
        PRIMARY KEY (run, idx)
    ) STRICT, WITHOUT ROWID""",
)

# -- watch facts finer than a second: each ClientIP re-pick a watch saw (numbered from 0 in the order seen;
# only the newest ``app.probe.watch.MAX_REPICKS`` kept) and each pod's exact first and last hit (seconds since
# the watch began, to the millisecond), so a stored watch's lags and re-picks read as they did live.
_WATCH_FACTS = (
    """CREATE TABLE watch_repicks (
        run INTEGER NOT NULL REFERENCES runs (n) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        at_s REAL NOT NULL,
        before_pod TEXT NOT NULL,
        after_pod TEXT NOT NULL,
        gap_s REAL NOT NULL,
        expected INTEGER NOT NULL,
        PRIMARY KEY (run, idx)
    ) STRICT, WITHOUT ROWID""",
    """CREATE TABLE watch_pods (
        run INTEGER NOT NULL REFERENCES runs (n) ON DELETE CASCADE,
        pod TEXT NOT NULL,
        first_hit_s REAL NOT NULL,
        last_hit_s REAL NOT NULL,
        PRIMARY KEY (run, pod)
    ) STRICT, WITHOUT ROWID""",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _WATCH_EVENTS, _WATCH_FACTS)
VERSION = len(MIGRATIONS)
