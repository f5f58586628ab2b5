"""A watch's cluster events in the run store: written while the watch runs, read back with it.

Events are numbered per watch from 0 in the order seen (``Watch.events_since``); writing one again (a retry)
replaces it. Each watch keeps only its newest ``MAX_EVENTS`` rows, as a watch in memory does, so a Service
flapping for half an hour cannot grow the file; how many older ones went is the lowest number kept.
Each helper runs inside a transaction that ``app.store.db`` opened.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from app.probe.watch import MAX_EVENTS, Event


@dataclass(frozen=True, slots=True)
class WatchEvents:
    events: tuple[Event, ...]  # in the order seen
    dropped: int  # older events not kept


NO_EVENTS = WatchEvents((), 0)


def put_events(
    db: sqlite3.Connection, n: int, events: Sequence[tuple[int, Event]], cap: int = MAX_EVENTS
) -> None:
    db.executemany(
        "INSERT OR REPLACE INTO watch_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(n, i, e.at_s, e.kind, e.text, e.pod, e.field, e.before, e.after) for i, e in events],
    )
    db.execute(
        """DELETE FROM watch_events WHERE run = ?
           AND idx <= (SELECT max(idx) FROM watch_events WHERE run = ?) - ?""",
        (n, n, cap),
    )


def load_events(db: sqlite3.Connection, n: int) -> WatchEvents:
    rows = db.execute(
        """SELECT idx, at_s, kind, text, pod, field, before_value, after_value FROM watch_events
           WHERE run = ? ORDER BY idx""",
        (n,),
    ).fetchall()
    if not rows:
        return NO_EVENTS
    events = tuple(
        Event(at_s, kind, text, pod, field, before, after)
        for _, at_s, kind, text, pod, field, before, after in rows
    )
    return WatchEvents(events, rows[0][0])
