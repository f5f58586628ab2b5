"""A watch's facts finer than its per-second aggregates, in the run store: the ClientIP re-picks it saw and
each pod's exact first and last hit. Written while the watch runs (with its events), read back with it.

Re-picks are numbered per watch from 0 in the order seen (``Series.repicks_since``); writing one again (a
retry) replaces it, and only the newest ``MAX_REPICKS`` rows are kept, as in memory. A pod's row is replaced
whenever its hits moved (at most ``MAX_PODS`` pods per watch, as in memory). Each helper runs inside a
transaction that ``app.store.db`` opened.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from app.probe.watch import MAX_PODS, MAX_REPICKS, Repick


@dataclass(frozen=True, slots=True)
class WatchFacts:
    repicks: tuple[Repick, ...]  # in the order seen
    hits: tuple[tuple[str, float, float], ...]  # (pod, first hit, last hit), seconds since the watch began


NO_FACTS = WatchFacts((), ())


def put_facts(
    db: sqlite3.Connection,
    n: int,
    repicks: Sequence[tuple[int, Repick]],
    hits: Sequence[tuple[str, float, float]],
) -> None:
    db.executemany(
        "INSERT OR REPLACE INTO watch_repicks VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(n, i, r.at_s, r.before, r.after, r.gap_s, int(r.expected)) for i, r in repicks],
    )
    db.execute(
        """DELETE FROM watch_repicks WHERE run = ?
           AND idx <= (SELECT max(idx) FROM watch_repicks WHERE run = ?) - ?""",
        (n, n, MAX_REPICKS),
    )
    known = {row[0] for row in db.execute("SELECT pod FROM watch_pods WHERE run = ?", (n,))}
    room = MAX_PODS - len(known)
    rows = []
    for pod, first, last in hits:
        if pod not in known:
            if room <= 0:
                continue
            room -= 1
        rows.append((n, pod, first, last))
    db.executemany("INSERT OR REPLACE INTO watch_pods VALUES (?, ?, ?, ?)", rows)


def load_facts(db: sqlite3.Connection, n: int) -> WatchFacts:
    repicks = tuple(
        Repick(at_s, before, after, gap_s, bool(expected))
        for at_s, before, after, gap_s, expected in db.execute(
            """SELECT at_s, before_pod, after_pod, gap_s, expected FROM watch_repicks
               WHERE run = ? ORDER BY idx""",
            (n,),
        )
    )
    hits = tuple(
        (pod, first, last)
        for pod, first, last in db.execute(
            "SELECT pod, first_hit_s, last_hit_s FROM watch_pods WHERE run = ? ORDER BY pod", (n,)
        )
    )
    return WatchFacts(repicks, hits)
