"""The run store's synchronous core: one SQLite file, one writer, any number of readers.

Blocking calls: the async facade (``app.store.aio``) runs them off the event loop. Write methods share one
connection, serialised by a lock, each call one transaction; reads borrow a connection of their own from a
small pool, which WAL lets read while the writer appends. A second process opening the same file for
writing is refused at open (an advisory lock on ``<path>.lock``) instead of interleaving with this one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from app.probe.stats import Outcome
from app.probe.targets import Backend
from app.store import schema
from app.store.codec import decode_summary, encode_summary
from app.store.config import StoreConfig
from app.store.records import (
    NO_BATCH,
    AttributionNote,
    Batch,
    FrozenEndpoints,
    Interrupted,
    Missing,
    RunEnd,
    RunRecord,
    RunStart,
    SecondAggregate,
    Status,
    StoredRun,
    TargetFacts,
    Tombstone,
)

log = logging.getLogger(__name__)

MIN_SQLITE = (3, 37, 0)  # STRICT tables
NO_SUCH_RUN = "no such run: it was never recorded here (or the store was replaced)"


class StoreError(Exception):
    """The store cannot be used or a write failed; ``message`` says why in plain words."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StoreLocked(StoreError):
    pass


class NewerSchema(StoreError):
    pass


class NotAStore(StoreError):
    """The file is damaged, or not a svcscope run store."""


def _span(seconds: float) -> str:
    for unit, size in (("day", 86_400.0), ("hour", 3_600.0), ("minute", 60.0)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds:g} s"


class RunStore:
    """Open with ``RunStore.open(config)``; every method may raise ``StoreError``."""

    def __init__(
        self,
        config: StoreConfig,
        writer: sqlite3.Connection,
        lock_fd: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._db = writer
        self._lock_fd = lock_fd
        self._clock = clock
        self._write_lock = threading.Lock()
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all_readers: list[sqlite3.Connection] = []
        self._closed = False
        # Committed write transactions: lets tests and benchmarks see that writes are batched.
        self.transactions = 0

    # -- opening ----------------------------------------------------------------------------------

    @classmethod
    def open(cls, config: StoreConfig, *, clock: Callable[[], float] = time.time) -> RunStore:
        """Open (creating or migrating) the store at ``config.path``; a clear ``StoreError`` otherwise."""
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StoreError(
                f"SQLite {sqlite3.sqlite_version} is too old for the run store "
                f"(needs {'.'.join(map(str, MIN_SQLITE))} or newer)"
            )
        path = Path(config.path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the directory of the run store {path}: {exc.strerror}") from exc
        lock_fd = _take_lock(path)
        db: sqlite3.Connection | None = None
        try:
            db = _connect(path, config)
            _prepare(db, path, config)
        except BaseException:
            if db is not None:
                db.close()
            os.close(lock_fd)
            raise
        return cls(config, db, lock_fd, clock=clock)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._write_lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA optimize")
            self._db.close()
        for conn in self._all_readers:
            conn.close()
        os.close(self._lock_fd)

    # -- plumbing ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: takes the write lock up front, so it cannot fail
        half-way on a lock upgrade)."""
        with self._write_lock:
            if self._closed:
                raise StoreError("the run store is closed")
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise StoreError(f"could not {what} in {self.config.path}: {exc}") from exc
            self.transactions += 1

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise StoreError("the run store is closed")
        try:
            conn = self._readers.get_nowait()
        except queue.Empty:
            conn = _connect(self.config.path, self.config, readonly=True)
            with self._write_lock:
                self._all_readers.append(conn)
        try:
            # One read transaction per call: all its queries see the same snapshot, even while the
            # writer commits in between.
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"could not read {self.config.path}: {exc}") from exc
        finally:
            self._readers.put(conn)

    # -- writes -----------------------------------------------------------------------------------

    def begin(self, start: RunStart) -> None:
        t = start.target
        with self._write("record a new run") as db:
            cur = db.execute(
                """INSERT INTO runs (id, kind, created, namespace, service, address, port, port_name,
                    protocol, session_affinity, affinity_timeout_s, spec, total, concurrency, reuse, origin,
                    client_pod, client_ip, status)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    start.id,
                    start.kind,
                    start.created,
                    t.namespace,
                    t.service,
                    t.address,
                    t.port,
                    t.port_name,
                    t.protocol,
                    t.session_affinity,
                    t.affinity_timeout_s,
                    json.dumps(dict(start.spec), separators=(",", ":")),
                    start.total,
                    start.concurrency,
                    int(start.reuse),
                    start.origin,
                    start.client_pod,
                    start.client_ip,
                    Status.RUNNING,
                ),
            )
            assert cur.lastrowid is not None
            _put_endpoints(db, cur.lastrowid, start.endpoints)
            # An id used again (ids are random, but be exact) is no longer "deleted".
            db.execute("DELETE FROM tombstones WHERE id = ?", (start.id,))

    def append(self, run_id: str, batch: Batch) -> int:
        """Store a batch of a running run in one transaction; returns how many outcomes were stored (those
        beyond ``max_outcomes_per_run`` are dropped: the per-second aggregates still count them)."""
        with self._write("store probe results") as db:
            n = _run_key(db, run_id)
            return _put_batch(db, n, batch, self.config.max_outcomes_per_run)

    def finish(self, run_id: str, end: RunEnd, last: Batch = NO_BATCH) -> None:
        """The run ended: its last results, frozen endpoints and summary, in one transaction."""
        if end.status not in Status.ALL or end.status == Status.RUNNING:
            raise ValueError(f"not a final status: {end.status!r}")
        with self._write("record the end of a run") as db:
            n = _run_key(db, run_id)
            _put_batch(db, n, last, self.config.max_outcomes_per_run)
            _put_endpoints(db, n, end.endpoints)
            db.execute(
                """UPDATE runs SET status = ?, error = ?, finished = ?, elapsed_s = ?, endpoints_changed = ?,
                    first_reply_ms = ?, summary = ? WHERE n = ?""",
                (
                    end.status,
                    end.error,
                    end.finished,
                    end.elapsed_s,
                    int(end.endpoints_changed),
                    end.first_reply_ms,
                    encode_summary(end.summary) if end.summary is not None else None,
                    n,
                ),
            )

    def mark_interrupted(self) -> list[Interrupted]:
        """Runs still ``running`` in the file were cut short by the process dying: mark them interrupted.

        Call once at start-up, before any run starts. A run whose every request is stored gets a summary
        computed from its rows and endpoints, so it reads like any finished run.
        """
        now = self._clock()
        changed: list[Interrupted] = []
        with self._write("mark interrupted runs") as db:
            rows = db.execute(
                """SELECT n, id, total, outcomes_stored,
                    (SELECT coalesce(sum(requests), 0) FROM seconds WHERE seconds.run = runs.n)
                   FROM runs WHERE status = ? ORDER BY created""",
                (Status.RUNNING,),
            ).fetchall()
            for n, run_id, total, stored, counted in rows:
                done = max(stored, counted)
                message = (
                    f"interrupted at {done}/{total}" if total else f"interrupted after {done} requests"
                ) + ": svcscope stopped while the run was going on"
                db.execute(
                    "UPDATE runs SET status = ?, error = ?, finished = ? WHERE n = ?",
                    (Status.INTERRUPTED, message, now, n),
                )
                if stored == done:
                    stored_run = _load(db, run_id)
                    assert stored_run is not None
                    summary = stored_run.resummarize()
                    db.execute("UPDATE runs SET summary = ? WHERE n = ?", (encode_summary(summary), n))
                changed.append(Interrupted(run_id, done, total, message))
        return changed

    def prune(self) -> list[Tombstone]:
        """Delete finished runs older than ``max_age_s``, beyond the newest ``max_runs``, and the oldest while
        the data exceeds ``max_bytes``; keep a tombstone saying why for each."""
        cfg = self.config
        now = self._clock()
        gone: list[Tombstone] = []
        with self._write("delete old runs") as db:
            old = db.execute(
                "SELECT n, id FROM runs WHERE status != ? AND created < ?",
                (Status.RUNNING, now - cfg.max_age_s),
            ).fetchall()
            reason = f"deleted by retention: older than {_span(cfg.max_age_s)}"
            gone += _delete(db, old, reason, now)
            running = db.execute("SELECT count(*) FROM runs WHERE status = ?", (Status.RUNNING,)).fetchone()[
                0
            ]
            excess = db.execute(
                """SELECT n, id FROM runs WHERE status != ? ORDER BY created DESC, n DESC
                   LIMIT -1 OFFSET ?""",
                (Status.RUNNING, max(0, cfg.max_runs - running)),
            ).fetchall()
            reason = f"deleted by retention: beyond the newest {cfg.max_runs} runs"
            gone += _delete(db, excess, reason, now)
            reason = f"deleted by retention: the store reached its size limit ({cfg.max_bytes / 2**20:g} MiB)"
            while _used_bytes(db) > cfg.max_bytes:
                oldest = db.execute(
                    "SELECT n, id FROM runs WHERE status != ? ORDER BY created, n LIMIT 1", (Status.RUNNING,)
                ).fetchall()
                if not oldest:
                    break
                gone += _delete(db, oldest, reason, now)
            db.execute(
                """DELETE FROM tombstones WHERE id IN
                   (SELECT id FROM tombstones ORDER BY at DESC, rowid DESC LIMIT -1 OFFSET ?)""",
                (cfg.max_tombstones,),
            )
        return gone

    # -- reads ------------------------------------------------------------------------------------

    def get(self, run_id: str) -> StoredRun | Missing:
        """A run with its outcomes and frozen endpoints, or why there is none."""
        with self._read() as db:
            found = _load(db, run_id)
            if found is not None:
                return found
            return _missing(db, run_id)

    def record(self, run_id: str) -> RunRecord | Missing:
        with self._read() as db:
            row = db.execute(f"SELECT {_RECORD_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
            return _record(row) if row is not None else _missing(db, run_id)

    def recent(
        self, limit: int = 50, *, namespace: str | None = None, service: str | None = None
    ) -> list[RunRecord]:
        """The newest runs first, optionally of one Service (``namespace`` and ``service``)."""
        where = ""
        args: tuple[str, ...] = ()
        if namespace is not None and service is not None:
            where, args = "WHERE namespace = ? AND service = ?", (namespace, service)
        with self._read() as db:
            rows = db.execute(
                f"SELECT {_RECORD_COLUMNS} FROM runs {where} ORDER BY created DESC, n DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [_record(r) for r in rows]

    def seconds(self, run_id: str, after: int = -1) -> list[SecondAggregate]:
        """A run's per-second aggregates with ``second > after``, in order (a timeline's new points)."""
        with self._read() as db:
            row = db.execute("SELECT n FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                return []
            return _seconds(db, row[0], after)

    def used_bytes(self) -> int:
        """Bytes of data (what ``max_bytes`` bounds; the file keeps freed pages for reuse)."""
        with self._read() as db:
            return _used_bytes(db)

    def size_bytes(self) -> int:
        """The file plus its write-ahead log (the disk footprint)."""
        with self._read() as db:
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            page_size = db.execute("PRAGMA page_size").fetchone()[0]
        wal = Path(f"{self.config.path}-wal")
        return int(pages * page_size + (wal.stat().st_size if wal.exists() else 0))


# -- helpers (each runs inside a caller's transaction) ------------------------------------------------


def _used_bytes(db: sqlite3.Connection) -> int:
    """Pages in use: deleted rows free pages that later writes reuse, so the file stays near this size."""
    pages = db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
    return int(pages * db.execute("PRAGMA page_size").fetchone()[0])


def _take_lock(path: Path) -> int:
    lock_path = Path(f"{path}.lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot open the run store {path}: {lock_path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreLocked(
            f"the run store {path} is in use by another svcscope process: a store has one writer, so "
            "give each dashboard replica its own volume (or run one replica)"
        ) from None
    return fd


def _connect(path: Path, config: StoreConfig, *, readonly: bool = False) -> sqlite3.Connection:
    try:
        # isolation_level=None: transactions are explicit (BEGIN ... COMMIT), never implied by the driver.
        conn = sqlite3.connect(
            path, timeout=config.busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(config.busy_timeout_s * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        if readonly:
            conn.execute("PRAGMA query_only = ON")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the run store {path}: {exc}") from exc
    return conn


def _prepare(db: sqlite3.Connection, path: Path, config: StoreConfig) -> None:
    """Check what the file is, switch it to WAL and bring its schema up to date."""
    try:
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise NotAStore(
            f"the run store {path} is damaged or not a SQLite database ({exc}); svcscope leaves it as it "
            "is: move it away (or delete it) to start with an empty store"
        ) from exc
    if tables and app_id != schema.APPLICATION_ID:
        raise NotAStore(
            f"{path} is a SQLite database of another program, not a svcscope run store; "
            "configure another path (SVCSCOPE_STORE_PATH)"
        )
    if version > schema.VERSION:
        raise NewerSchema(
            f"the run store {path} was written by a newer svcscope (schema version {version}; this "
            f"version reads up to {schema.VERSION}): run the newer version, or use another path"
        )
    try:
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(
                f"the run store {path} cannot use write-ahead logging (journal mode {mode!r}): "
                "put it on a local filesystem (emptyDir or a block-storage volume), not a network share"
            )
        # WAL with synchronous=NORMAL: a power cut may lose the last transactions, never corrupt the file.
        db.execute("PRAGMA synchronous = NORMAL")
        # After a checkpoint the write-ahead log is cut back to this size instead of keeping its peak.
        db.execute("PRAGMA journal_size_limit = 16777216")
        if config.check_on_open and tables:
            problems = [r[0] for r in db.execute("PRAGMA quick_check(5)").fetchall()]
            if problems != ["ok"]:
                raise NotAStore(
                    f"the run store {path} is damaged ({'; '.join(problems)}); svcscope leaves it as it is: "
                    "move it away (or delete it) to start with an empty store"
                )
        for target in range(version + 1, schema.VERSION + 1):
            _migrate(db, target)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot prepare the run store {path}: {exc}") from exc


def _migrate(db: sqlite3.Connection, target: int) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in schema.MIGRATIONS[target - 1]:
            db.execute(statement)
        db.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {target}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    log.info("run store schema migrated to version %d", target)


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


def _put_seconds(db: sqlite3.Connection, n: int, seconds: Sequence[SecondAggregate]) -> None:
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


def _seconds(db: sqlite3.Connection, n: int, after: int) -> list[SecondAggregate]:
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
        SecondAggregate(
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
