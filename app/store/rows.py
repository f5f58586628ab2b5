"""Rows in and out: each helper runs inside a transaction that ``app.store.db`` opened."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from app.probe.stats import Outcome
from app.probe.targets import Backend
from app.probe.watch import Second
from app.store.codec import decode_summary
from app.store.errors import NO_SUCH_RUN, StoreError
from app.store.records import (
    AttributionNote,
    Batch,
    FrozenEndpoints,
    Missing,
    RunRecord,
    Status,
    StoredRun,
    TargetFacts,
    Tombstone,
)


def _run_key(db: sqlite3.Connection, run_id: str) -> int:
    row = db.execute("SELECT n, status FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise StoreError(f"run {run_id} is not in the store")
    if row[1] != Status.RUNNING:
        raise StoreError(f"run {run_id} has already ended ({row[1]})")
    return int(row[0])


def _put_batch(db: sqlite3.Connection, n: int, batch: Batch, cap: int) -> int:
    stored = 0
    if batch.outcomes:
        have = db.execute("SELECT outcomes_stored FROM runs WHERE n = ?", (n,)).fetchone()[0]
        room = max(0, cap - have)
        rows = [
            (n, o.seq, o.pod, o.error, o.latency_ms, o.connection, o.reason, o.method, o.status, o.at_ms)
            for o in batch.outcomes[:room]
        ]
        if rows:
            # OR IGNORE: a batch sent twice (a retry) must not fail the run nor count twice.
            cur = db.executemany("INSERT OR IGNORE INTO outcomes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            stored = cur.rowcount
            db.execute("UPDATE runs SET outcomes_stored = outcomes_stored + ? WHERE n = ?", (stored, n))
    _put_seconds(db, n, batch.seconds)
    if batch.samples:
        row = db.execute("SELECT samples FROM runs WHERE n = ?", (n,)).fetchone()
        samples = json.loads(row[0])
        for key, text in batch.samples.items():
            samples.setdefault(key, text)
        db.execute("UPDATE runs SET samples = ? WHERE n = ?", (json.dumps(samples, ensure_ascii=False), n))
    if batch.endpoints is not None:
        _put_endpoints(db, n, batch.endpoints)
    if batch.endpoints_changed is not None:
        db.execute("UPDATE runs SET endpoints_changed = ? WHERE n = ?", (int(batch.endpoints_changed), n))
    if batch.attribution is not None:
        a = batch.attribution
        db.execute(
            "UPDATE runs SET attribution_mode = ?, attribution_note = ?, rule = ? WHERE n = ?",
            (a.mode, a.note, a.rule, n),
        )
    if batch.started is not None:
        db.execute("UPDATE runs SET started = ? WHERE n = ?", (batch.started, n))
    return stored


def _put_seconds(db: sqlite3.Connection, n: int, seconds: Sequence[Second]) -> None:
    # A second stored before gets the late requests added; its quantiles stay those computed when it closed.
    db.executemany(
        """INSERT INTO seconds VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run, second) DO UPDATE SET
            requests = requests + excluded.requests, unattributed = unattributed + excluded.unattributed,
            p50_ms = coalesce(p50_ms, excluded.p50_ms), p95_ms = coalesce(p95_ms, excluded.p95_ms)""",
        [(n, s.second, s.requests, s.unattributed, s.p50_ms, s.p95_ms) for s in seconds],
    )
    db.executemany(
        """INSERT INTO second_hits VALUES (?, ?, ?, ?)
           ON CONFLICT (run, second, pod) DO UPDATE SET hits = hits + excluded.hits""",
        [(n, s.second, pod, hits) for s in seconds for pod, hits in s.hits],
    )
    db.executemany(
        """INSERT INTO second_errors VALUES (?, ?, ?, ?)
           ON CONFLICT (run, second, kind) DO UPDATE SET count = count + excluded.count""",
        [(n, s.second, kind, count) for s in seconds for kind, count in s.errors],
    )


def _put_endpoints(db: sqlite3.Connection, n: int, endpoints: FrozenEndpoints) -> None:
    db.execute("DELETE FROM endpoints WHERE run = ?", (n,))
    db.executemany(
        "INSERT INTO endpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (n, role, i, b.pod, b.ip, b.port, b.node, int(b.ready), int(b.serving), int(b.terminating))
            for role, backends in (("current", endpoints.current), ("known", endpoints.known))
            for i, b in enumerate(backends)
        ],
    )


def _delete(
    db: sqlite3.Connection, rows: Sequence[tuple[int, str]], reason: str, now: float
) -> list[Tombstone]:
    gone = [Tombstone(run_id, reason, now) for _, run_id in rows]
    # Child rows go with their run (ON DELETE CASCADE).
    db.executemany("DELETE FROM runs WHERE n = ?", [(n,) for n, _ in rows])
    db.executemany(
        "INSERT OR REPLACE INTO tombstones VALUES (?, ?, ?)", [(t.id, t.reason, t.at) for t in gone]
    )
    return gone


_RECORD_COLUMNS = """id, kind, created, namespace, service, address, port, port_name, protocol,
    session_affinity, affinity_timeout_s, spec, total, concurrency, reuse, origin, client_pod, client_ip,
    status, error, started, finished, elapsed_s, attribution_mode, attribution_note, rule, endpoints_changed,
    first_reply_ms, outcomes_stored, samples, summary"""


def _record(r: Sequence[Any]) -> RunRecord:
    (
        run_id, kind, created, namespace, service, address, port, port_name, protocol,
        affinity, affinity_timeout_s, spec, total, concurrency, reuse, origin, client_pod, client_ip,
        status, error, started, finished, elapsed_s, mode, note, rule, changed,
        first_reply_ms, outcomes_stored, samples, summary,
    ) = r  # fmt: skip
    return RunRecord(
        id=run_id,
        kind=kind,
        created=created,
        target=TargetFacts(
            namespace, service, address, port, port_name, protocol, affinity, affinity_timeout_s
        ),
        spec=json.loads(spec),
        total=total,
        concurrency=concurrency,
        reuse=bool(reuse),
        origin=origin,
        client_pod=client_pod,
        client_ip=client_ip,
        status=status,
        error=error,
        started=started,
        finished=finished,
        elapsed_s=elapsed_s,
        attribution=AttributionNote(mode, note or "", rule) if mode is not None else None,
        endpoints_changed=bool(changed),
        first_reply_ms=first_reply_ms,
        outcomes_stored=outcomes_stored,
        samples=json.loads(samples),
        summary=decode_summary(summary) if summary is not None else None,
    )


def _load(db: sqlite3.Connection, run_id: str) -> StoredRun | None:
    row = db.execute(f"SELECT n, {_RECORD_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        return None
    n, record = row[0], _record(row[1:])
    outcomes = tuple(
        Outcome(seq, pod, error, latency, conn, reason=reason, method=method, status=status, at_ms=at_ms)
        for seq, pod, error, latency, conn, reason, method, status, at_ms in db.execute(
            """SELECT seq, pod, error, latency_ms, connection, reason, method, status, at_ms
               FROM outcomes WHERE run = ? ORDER BY seq""",
            (n,),
        )
    )
    sets: dict[str, list[Backend]] = {"current": [], "known": []}
    for role, pod, ip, port, node, ready, serving, terminating in db.execute(
        """SELECT role, pod, ip, port, node, ready, serving, terminating
           FROM endpoints WHERE run = ? ORDER BY role, idx""",
        (n,),
    ):
        sets[role].append(Backend(pod, ip, port, node, bool(ready), bool(serving), bool(terminating)))
    return StoredRun(record, outcomes, FrozenEndpoints(tuple(sets["current"]), tuple(sets["known"])))


def _seconds(db: sqlite3.Connection, n: int, after: int) -> list[Second]:
    hits: dict[int, list[tuple[str, int]]] = {}
    for second, pod, count in db.execute(
        "SELECT second, pod, hits FROM second_hits WHERE run = ? AND second > ? ORDER BY second, pod",
        (n, after),
    ):
        hits.setdefault(second, []).append((pod, count))
    errors: dict[int, list[tuple[str, int]]] = {}
    for second, kind, count in db.execute(
        "SELECT second, kind, count FROM second_errors WHERE run = ? AND second > ? ORDER BY second, kind",
        (n, after),
    ):
        errors.setdefault(second, []).append((kind, count))
    return [
        Second(
            second,
            requests,
            unattributed,
            tuple(hits.get(second, ())),
            tuple(errors.get(second, ())),
            p50,
            p95,
        )
        for second, requests, unattributed, p50, p95 in db.execute(
            """SELECT second, requests, unattributed, p50_ms, p95_ms FROM seconds
               WHERE run = ? AND second > ? ORDER BY second""",
            (n, after),
        )
    ]


def _missing(db: sqlite3.Connection, run_id: str) -> Missing:
    row = db.execute("SELECT reason, at FROM tombstones WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        return Missing(run_id, NO_SUCH_RUN)
    return Missing(run_id, row[0], row[1])
