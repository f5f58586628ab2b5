"""Opening the store's file: the one-writer lock, connection settings, what the file is, schema migrations."""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
from pathlib import Path

from app.store import schema
from app.store.config import StoreConfig
from app.store.errors import NewerSchema, NotAStore, StoreError, StoreLocked

log = logging.getLogger(__name__)


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
