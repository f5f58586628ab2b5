"""The run store's synchronous core: one SQLite file, one writer, any number of readers.

Blocking calls: the async facade (``app.store.aio``) runs them off the event loop. Write methods share one
connection, serialised by a lock, each call one transaction; reads borrow a connection of their own from a
small pool, which WAL lets read while the writer appends. A second process opening the same file for
writing is refused at open (an advisory lock on ``<path>.lock``) instead of interleaving with this one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from app.probe.watch import Event, Repick, Second
from app.store.codec import encode_summary
from app.store.config import StoreConfig
from app.store.errors import MIN_SQLITE, NO_SUCH_RUN, NewerSchema, NotAStore, StoreError, StoreLocked, _span
from app.store.events import NO_EVENTS, WatchEvents, load_events, put_events
from app.store.records import (
    NEWEST,
    NO_BATCH,
    Batch,
    Interrupted,
    Missing,
    PageQuery,
    RunEnd,
    RunPage,
    RunRecord,
    RunStart,
    Status,
    StoredRun,
    Tombstone,
)
from app.store.rows import (
    _RECORD_COLUMNS,
    _delete,
    _load,
    _missing,
    _put_batch,
    _put_endpoints,
    _record,
    _run_key,
    _seconds,
)
from app.store.sqlfile import _connect, _prepare, _take_lock, _used_bytes
from app.store.watchfacts import NO_FACTS, WatchFacts, load_facts, put_facts

log = logging.getLogger(__name__)

MAX_PAGE = 200  # runs per page of a listing: one page is one bounded query and one bounded render

__all__ = ["MAX_PAGE", "NO_SUCH_RUN", "NewerSchema", "NotAStore", "RunStore", "StoreError", "StoreLocked"]


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
                    first_reply_ms = ?, summary = ?, client_ip = COALESCE(?, client_ip) WHERE n = ?""",
                (
                    end.status,
                    end.error,
                    end.finished,
                    end.elapsed_s,
                    int(end.endpoints_changed),
                    end.first_reply_ms,
                    encode_summary(end.summary) if end.summary is not None else None,
                    end.client_ip,
                    n,
                ),
            )

    def add_events(self, run_id: str, events: Sequence[tuple[int, Event]]) -> None:
        """A running watch's new cluster events, numbered (``app.store.events``)."""
        with self._write("store watch events") as db:
            put_events(db, _run_key(db, run_id), events)

    def add_watch_facts(
        self,
        run_id: str,
        repicks: Sequence[tuple[int, Repick]],
        hits: Sequence[tuple[str, float, float]],
    ) -> None:
        """A running watch's new ClientIP re-picks (numbered) and its pods' moved first/last hits."""
        with self._write("store watch re-picks") as db:
            put_facts(db, _run_key(db, run_id), repicks, hits)

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

    def page(self, query: PageQuery = NEWEST) -> RunPage | Missing:
        """A page of runs (``PageQuery``: 1 to ``MAX_PAGE`` of them), newest first. A cursor run that is
        gone gives why (``Missing``), rather than a page that silently starts somewhere else."""
        if not 1 <= query.limit <= MAX_PAGE:
            raise ValueError(f"a page holds 1 to {MAX_PAGE} runs, not {query.limit}")
        where: list[str] = []
        args: list[str | float | int] = []
        if query.kind is not None:
            where.append("kind = ?")
            args.append(query.kind)
        if query.namespace is not None and query.service is not None:
            where += ["namespace = ?", "service = ?"]
            args += [query.namespace, query.service]
        with self._read() as db:
            if query.before is not None:
                cursor = db.execute("SELECT created, n FROM runs WHERE id = ?", (query.before,)).fetchone()
                if cursor is None:
                    return _missing(db, query.before)
                # Keyset, not OFFSET: runs started or deleted meanwhile neither repeat nor skip a row.
                where.append("(created < ? OR (created = ? AND n < ?))")
                args += [cursor[0], cursor[0], cursor[1]]
            clause = f"WHERE {' AND '.join(where)}" if where else ""
            rows = db.execute(
                f"SELECT {_RECORD_COLUMNS} FROM runs {clause} ORDER BY created DESC, n DESC LIMIT ?",
                (*args, query.limit + 1),
            ).fetchall()
        records = tuple(_record(r) for r in rows[: query.limit])
        return RunPage(records, records[-1].id if len(rows) > query.limit else None)

    def seconds(self, run_id: str, after: int = -1) -> list[Second]:
        """A run's per-second aggregates with ``second > after``, in order (a timeline's new points)."""
        with self._read() as db:
            row = db.execute("SELECT n FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                return []
            return _seconds(db, row[0], after)

    def events(self, run_id: str) -> WatchEvents:
        """A watch's stored cluster events (none for a run or an unknown id)."""
        with self._read() as db:
            row = db.execute("SELECT n FROM runs WHERE id = ?", (run_id,)).fetchone()
            return load_events(db, row[0]) if row is not None else NO_EVENTS

    def watch_facts(self, run_id: str) -> WatchFacts:
        """A watch's stored re-picks and exact first/last hits (none for a run or an unknown id)."""
        with self._read() as db:
            row = db.execute("SELECT n FROM runs WHERE id = ?", (run_id,)).fetchone()
            return load_facts(db, row[0]) if row is not None else NO_FACTS

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
