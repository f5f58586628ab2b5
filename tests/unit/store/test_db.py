from __future__ import annotations

import dataclasses
import sqlite3
import threading
from pathlib import Path

import pytest

from app.probe.stats import summarize
from app.probe.watch import Second
from app.store import (
    AttributionNote,
    Batch,
    FrozenEndpoints,
    Missing,
    NewerSchema,
    NotAStore,
    RunStore,
    StoreConfig,
    StoredRun,
    StoreError,
    StoreLocked,
    spec_fields,
)
from app.store import schema as store_schema
from app.store.codec import encode_summary
from app.store.db import NO_SUCH_RUN
from app.store.records import Status
from tests.unit.store.factory import (
    NOW,
    PODS_ABC,
    PODS_DEF,
    SPEC,
    TARGET,
    Clock,
    backend,
    batches,
    end,
    final_summary,
    finished_run,
    open_store,
    outcomes,
    shape,
    start,
)

DAY = 86_400.0


def test_round_trip_of_a_finished_run(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    results = outcomes(100)
    store.begin(start())
    store.append(
        "r1",
        Batch(
            outcomes=tuple(results[:60]),
            samples={"echo-a": "200 hello from echo-a"},
            attribution=AttributionNote("auto", "each pod names itself", None),
            started=NOW + 0.2,
        ),
    )
    finish = end(results)
    store.finish("r1", finish, Batch(outcomes=tuple(results[60:]), samples={"echo-a": "later", "x": "y"}))

    got = store.get("r1")
    assert isinstance(got, StoredRun)
    rec = got.record
    assert (rec.id, rec.status, rec.created, rec.started, rec.finished) == (
        "r1",
        "done",
        NOW,
        NOW + 0.2,
        NOW + 5,
    )
    assert rec.target == TARGET and rec.spec == SPEC
    assert (rec.total, rec.concurrency, rec.reuse, rec.origin) == (100, 10, False, "dashboard")
    assert (rec.client_pod, rec.client_ip) == ("svcscope-0", "10.0.0.99")
    assert rec.attribution == AttributionNote("auto", "each pod names itself", None)
    assert rec.samples == {"echo-a": "200 hello from echo-a", "x": "y"}  # the first sample per key stays
    assert (rec.elapsed_s, rec.first_reply_ms, rec.outcomes_stored) == (1.25, 0.9, 100)
    assert got.outcomes == tuple(results)
    assert got.endpoints == FrozenEndpoints(PODS_ABC, PODS_ABC)
    # The report reads back exactly as frozen, with its per-request sequence.
    live = final_summary(results, finish.endpoints)
    assert got.summary() == live
    assert rec.summary == dataclasses.replace(live, sequence=())


def test_a_client_address_learnt_during_the_run_is_stored_with_its_end(tmp_path: Path) -> None:
    """A probe pod's address comes with its first records, after the run's start was stored: a run read
    back (as a fan-out's older rows are) must still know its client."""
    store = open_store(tmp_path)
    results = outcomes(10)
    store.begin(dataclasses.replace(start("p1"), client_pod="svcscope-probe-p1", client_ip=None))
    store.finish(
        "p1", dataclasses.replace(end(results), client_ip="198.18.2.9"), Batch(outcomes=tuple(results))
    )
    got = store.get("p1")
    assert isinstance(got, StoredRun) and got.record.client_ip == "198.18.2.9"
    store.begin(start("d1"))  # known from the start: an end without one keeps it
    store.finish("d1", end(results), Batch(outcomes=tuple(results)))
    kept = store.get("d1")
    assert isinstance(kept, StoredRun) and kept.record.client_ip == "10.0.0.99"


def test_resummarizing_stored_rows_is_deterministic(tmp_path: Path) -> None:
    """Outcomes stored out of order, floats through SQLite REAL: the pure summary comes out identical."""
    store = open_store(tmp_path)
    results = outcomes(500)
    store.begin(start(total=500))
    for chunk in batches(list(reversed(results)), 64):
        store.append("r1", Batch(outcomes=chunk))
    got = store.get("r1")
    assert isinstance(got, StoredRun)
    eps = FrozenEndpoints(PODS_ABC, PODS_ABC)
    expected = summarize(results, dataclasses.replace(shape(500), finished=False), eps.current, eps.known)
    assert got.resummarize() == expected
    assert got.summary() == expected  # no frozen summary while running: computed from the rows


def test_the_report_is_identical_after_the_pods_were_replaced(tmp_path: Path) -> None:
    """The run measured pods a, b, c; today the Service has d, e, f. The stored report must not change."""
    store = open_store(tmp_path)
    results = outcomes(300)
    store.begin(start(total=300))
    eps = FrozenEndpoints(PODS_ABC, PODS_ABC)
    frozen = summarize(results, shape(300), eps.current, eps.known)
    store.finish(
        "r1",
        dataclasses.replace(end(results), summary=frozen),
        Batch(outcomes=tuple(results)),
    )
    before = store.get("r1")
    assert isinstance(before, StoredRun)
    # What recomputing against today's endpoints would show (the bug this store exists to prevent).
    today = summarize(results, shape(300), PODS_DEF, PODS_ABC)
    assert today != frozen and {p.pod for p in today.pods} >= {"echo-d"}
    store.close()

    after = open_store(tmp_path).get("r1")
    assert isinstance(after, StoredRun)
    assert after.summary() == before.summary() == frozen
    assert after.resummarize() == frozen
    assert encode_summary(after.summary()) == encode_summary(frozen)
    assert frozen.chi_square is not None and "uniform" in frozen.verdict


def test_endpoint_sets_keep_order_duplicates_and_unwatched_backends(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    dual = (
        backend("echo-a", "10.0.0.1"),
        backend("echo-a", "fd00::1"),
        dataclasses.replace(backend("x", "10.0.0.7", ready=False), pod=None, port=None, node=None),
    )
    known = (*PODS_ABC, backend("echo-gone", "10.0.0.9", ready=False))
    store.begin(start())
    store.append("r1", Batch(endpoints=FrozenEndpoints(dual, known), endpoints_changed=True))
    got = store.get("r1")
    assert isinstance(got, StoredRun)
    assert got.endpoints == FrozenEndpoints(dual, known)
    assert got.record.endpoints_changed is True
    assert got.known["echo-a"].ip == "fd00::1"  # the last one seen wins, as in the live summary


def test_unknown_run_and_appending_to_an_ended_run(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    assert store.get("nope") == Missing("nope", NO_SUCH_RUN)
    assert store.record("nope") == Missing("nope", NO_SUCH_RUN)
    assert store.seconds("nope") == []
    with pytest.raises(StoreError, match="not in the store"):
        store.append("nope", Batch())
    finished_run(store, "r1")
    with pytest.raises(StoreError, match="already ended"):
        store.append("r1", Batch(outcomes=tuple(outcomes(1, start=500))))
    with pytest.raises(ValueError, match="final status"):
        store.finish("r1", dataclasses.replace(end([]), status="running"))


def test_outcomes_beyond_the_cap_are_dropped_but_counted_per_second(tmp_path: Path) -> None:
    store = open_store(tmp_path, max_outcomes_per_run=100)
    results = outcomes(150)
    store.begin(start(total=150))
    assert store.append("r1", Batch(outcomes=tuple(results[:80]))) == 80
    second = Second(0, 150, 0, (("echo-a", 150),), (), 1.0, 2.0)
    assert store.append("r1", Batch(outcomes=tuple(results[80:]), seconds=(second,))) == 20
    assert store.append("r1", Batch(outcomes=tuple(results[:10]))) == 0  # a repeated batch: not twice
    got = store.get("r1")
    assert isinstance(got, StoredRun)
    assert got.record.outcomes_stored == 100 and got.outcomes == tuple(results[:100])
    assert [s.requests for s in store.seconds("r1")] == [150]


def test_each_append_is_one_transaction_however_large(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.begin(start(total=10_000))
    before = store.transactions
    for chunk in batches(outcomes(10_000), 2_500):
        store.append("r1", Batch(outcomes=chunk))
    assert store.transactions - before == 4


def test_late_seconds_add_to_the_stored_row(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.begin(start(kind="watch", total=0))
    first = Second(3, 10, 1, (("echo-a", 6), ("echo-b", 2)), (("timeout", 1),), 1.0, 4.0)
    late = Second(3, 2, 0, (("echo-b", 1), ("echo-c", 1)), (), 9.0, 9.0)
    store.append("r1", Batch(seconds=(first,)))
    store.append("r1", Batch(seconds=(late,)))
    assert store.seconds("r1") == [
        Second(3, 12, 1, (("echo-a", 6), ("echo-b", 3), ("echo-c", 1)), (("timeout", 1),), 1.0, 4.0)
    ]
    assert store.seconds("r1", after=3) == []


# -- start-up: runs cut short ------------------------------------------------------------------------


def test_runs_left_running_are_marked_interrupted_at_start_up(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    results = outcomes(30)
    store.begin(start("cut", total=100))
    store.append("cut", Batch(outcomes=tuple(results)))
    store.begin(start("watch", kind="watch", total=0))
    store.append("watch", Batch(seconds=(Second(0, 200, 0, (("echo-a", 200),), (), 1.0, 2.0),)))
    finished_run(store, "done")
    store.close()  # the process died: nothing finished the two runs

    clock = Clock(NOW + 60)
    store = open_store(tmp_path, clock)
    changed = store.mark_interrupted()
    assert [(c.id, c.done, c.total) for c in changed] == [("cut", 30, 100), ("watch", 200, 0)]
    assert changed[0].message.startswith("interrupted at 30/100")
    assert changed[1].message.startswith("interrupted after 200 requests")

    cut = store.get("cut")
    assert isinstance(cut, StoredRun)
    assert (cut.record.status, cut.record.error, cut.record.finished) == (
        Status.INTERRUPTED,
        changed[0].message,
        NOW + 60,
    )
    # Every request it made is stored, so it gets a frozen summary over what was done.
    assert cut.record.summary is not None and cut.summary().done == 30
    assert cut.summary() == summarize(results, shape(100), PODS_ABC, PODS_ABC)
    watch = store.record("watch")
    assert not isinstance(watch, Missing) and watch.status == Status.INTERRUPTED and watch.summary is None
    assert store.mark_interrupted() == []  # nothing left running
    assert [r.status for r in store.recent()] == [Status.DONE, Status.INTERRUPTED, Status.INTERRUPTED]


# -- retention -------------------------------------------------------------------------------------


RETENTION = [
    pytest.param(
        # (created age in days, still running?) per run, newest last
        [(1, False), (2, False), (3, False), (4, False), (5, False)],
        {"max_runs": 3},
        {"r4": "beyond the newest 3 runs", "r5": "beyond the newest 3 runs"},
        id="by-count",
    ),
    pytest.param(
        [(9, False), (8, False), (6.9, False), (0.5, False)],
        {"max_age_s": 7 * DAY},
        {"r1": "older than 7 days", "r2": "older than 7 days"},
        id="by-age",
    ),
    pytest.param(
        [(10, True), (9, False), (2, False), (1, False)],
        {"max_runs": 2, "max_age_s": 7 * DAY},
        {"r2": "older than 7 days", "r3": "beyond the newest 2 runs"},
        id="a-running-run-is-never-deleted-but-counts",
    ),
    pytest.param(
        [(3, False), (2, False), (1, False)],
        {"max_runs": 3, "max_age_s": 7 * DAY},
        {},
        id="within-both-limits",
    ),
]


@pytest.mark.parametrize(("runs", "limits", "deleted"), RETENTION)
def test_retention(
    tmp_path: Path, runs: list[tuple[float, bool]], limits: dict[str, float], deleted: dict[str, str]
) -> None:
    store = open_store(tmp_path, **limits)
    for i, (age_days, running) in enumerate(runs, start=1):
        created = NOW - age_days * DAY
        if running:
            store.begin(start(f"r{i}", created=created))
        else:
            finished_run(store, f"r{i}", created=created)
    gone = store.prune()
    assert {t.id: t.reason for t in gone} == {k: f"deleted by retention: {v}" for k, v in deleted.items()}
    kept = {r.id for r in store.recent(100)}
    assert kept == {f"r{i}" for i in range(1, len(runs) + 1)} - set(deleted)
    for run_id, why in deleted.items():
        missing = store.get(run_id)
        assert missing == Missing(run_id, f"deleted by retention: {why}", NOW)
    # Their rows went with them.
    with sqlite3.connect(tmp_path / "runs.db") as db:
        (rows,) = db.execute("SELECT count(DISTINCT run) FROM outcomes").fetchone()
    assert rows == len(kept) - sum(1 for _, running in runs if running)


def test_the_oldest_runs_go_when_the_store_outgrows_its_size_limit(tmp_path: Path) -> None:
    store = open_store(tmp_path, max_bytes=2**20)
    for i in range(1, 4):  # about 0.7 MB each
        finished_run(store, f"r{i}", created=NOW + i, n=10_000)
    store.begin(start("running", created=NOW - 1))  # never deleted, however old
    gone = store.prune()
    assert [(t.id, t.reason) for t in gone] == [
        (f"r{i}", "deleted by retention: the store reached its size limit (1 MiB)") for i in (1, 2)
    ]
    assert {r.id for r in store.recent()} == {"r3", "running"}
    assert store.used_bytes() <= 2**20 < store.size_bytes()  # the file keeps the freed pages for reuse


def test_tombstones_are_bounded_and_a_new_run_clears_its_own(tmp_path: Path) -> None:
    clock = Clock()
    store = open_store(tmp_path, clock, max_runs=1, max_tombstones=2)
    for i in range(1, 5):
        clock.now = NOW + i
        finished_run(store, f"r{i}", created=NOW + i)
        store.prune()
    # r1, r2, r3 were deleted in turn; only the two newest tombstones are kept.
    assert store.get("r1") == Missing("r1", NO_SUCH_RUN)
    assert isinstance(store.get("r2"), Missing) and store.get("r2") != Missing("r2", NO_SUCH_RUN)
    assert isinstance(store.get("r3"), Missing) and isinstance(store.get("r4"), StoredRun)
    store.begin(start("r3", created=NOW + 10))
    assert isinstance(store.get("r3"), StoredRun)


def test_recent_lists_newest_first_and_filters_by_service(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    finished_run(store, "old", created=NOW - 10)
    finished_run(store, "new", created=NOW)
    other = dataclasses.replace(
        start("other", created=NOW - 5), target=dataclasses.replace(TARGET, service="web")
    )
    store.begin(other)
    assert [r.id for r in store.recent()] == ["new", "other", "old"]
    assert [r.id for r in store.recent(namespace="demo", service="web")] == ["other"]
    assert [r.id for r in store.recent(1)] == ["new"]
    assert store.recent()[0].summary is not None


# -- opening: what is refused, and how -------------------------------------------------------------


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database at all" * 100)


def _other_program(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (text TEXT)")


def _damaged(path: Path) -> None:
    store = RunStore.open(StoreConfig(path))
    for i in range(20):
        finished_run(store, f"r{i}", n=200)
    store.close()
    data = bytearray(path.read_bytes())
    page = 4096
    for p in range(2, len(data) // page):  # keep page 1 (the header and schema) readable
        data[p * page + 8 : p * page + 200] = b"\xff" * 192
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        pytest.param(_garbage, NotAStore, "damaged or not a SQLite database", id="garbage"),
        pytest.param(_other_program, NotAStore, "another program", id="another-programs-database"),
        pytest.param(_damaged, NotAStore, "damaged", id="damaged-pages"),
        pytest.param(lambda p: p.mkdir(), StoreError, "cannot open the run store", id="a-directory"),
    ],
)
def test_a_file_that_is_no_usable_store_is_refused_with_a_reason(tmp_path: Path, make, error, words) -> None:
    path = tmp_path / "runs.db"
    make(path)
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(error, match=words) as info:
        RunStore.open(StoreConfig(path))
    assert str(path) in info.value.message
    if before is not None:
        assert path.read_bytes() == before  # left as it was
    # The lock was released: fixing the cause is enough, no stale lock remains.
    if path.is_dir():
        path.rmdir()
    else:
        path.unlink()
    RunStore.open(StoreConfig(path)).close()


def test_a_path_below_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot create the directory"):
        RunStore.open(StoreConfig(tmp_path / "file" / "runs.db"))


def test_a_store_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    open_store(tmp_path).close()
    with sqlite3.connect(tmp_path / "runs.db") as db:
        db.execute(f"PRAGMA user_version = {store_schema.VERSION + 1}")
    with pytest.raises(NewerSchema, match=f"schema version {store_schema.VERSION + 1}"):
        open_store(tmp_path)


def test_a_second_writer_is_refused_at_once(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    with pytest.raises(StoreLocked, match="in use by another svcscope process"):
        open_store(tmp_path)
    store.close()
    open_store(tmp_path).close()


def test_opening_migrates_forward_and_keeps_the_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(tmp_path)
    finished_run(store, "r1")
    store.close()
    current = store_schema.VERSION
    following = ("ALTER TABLE runs ADD COLUMN label TEXT",)
    monkeypatch.setattr(store_schema, "MIGRATIONS", (*store_schema.MIGRATIONS, following))
    monkeypatch.setattr(store_schema, "VERSION", current + 1)
    store = open_store(tmp_path)
    assert isinstance(store.get("r1"), StoredRun)
    store.close()
    with sqlite3.connect(tmp_path / "runs.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == current + 1
        assert "label" in {row[1] for row in db.execute("PRAGMA table_info(runs)")}
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_failed_migration_leaves_the_old_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    open_store(tmp_path).close()
    current = store_schema.VERSION
    broken = ("ALTER TABLE runs ADD COLUMN label TEXT", "THIS IS NOT SQL")
    monkeypatch.setattr(store_schema, "MIGRATIONS", (*store_schema.MIGRATIONS, broken))
    monkeypatch.setattr(store_schema, "VERSION", current + 1)
    with pytest.raises(StoreError, match="cannot prepare"):
        open_store(tmp_path)
    with sqlite3.connect(tmp_path / "runs.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == current
        assert "label" not in {row[1] for row in db.execute("PRAGMA table_info(runs)")}


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.close()
    store.close()  # twice is harmless
    with pytest.raises(StoreError, match="closed"):
        store.begin(start())
    with pytest.raises(StoreError, match="closed"):
        store.get("r1")


# -- readers alongside the writer ------------------------------------------------------------------


def test_a_reader_sees_consistent_snapshots_while_the_writer_appends(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    results = outcomes(10_000)
    store.begin(start(total=10_000))
    done = threading.Event()
    failures: list[BaseException] = []

    def write() -> None:
        try:
            for chunk in batches(results, 200):
                store.append("r1", Batch(outcomes=chunk))
        except BaseException as exc:  # reported by the test below
            failures.append(exc)
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    seen: list[int] = []
    while not done.is_set() or not seen or seen[-1] < 10_000:
        got = store.get("r1")
        assert isinstance(got, StoredRun)
        # One read transaction: the counter and the rows agree, whatever the writer did meanwhile.
        assert got.record.outcomes_stored == len(got.outcomes)
        seen.append(len(got.outcomes))
        if done.is_set() and failures:
            break
    writer.join()
    assert not failures
    assert seen == sorted(seen) and seen[-1] == 10_000
    assert len(set(seen)) > 1 or seen[0] == 10_000


def test_spec_fields_stores_enums_by_value() -> None:
    import enum

    class Proto(enum.StrEnum):
        HTTP = "HTTP"

    @dataclasses.dataclass(frozen=True)
    class Spec:
        namespace: str
        protocol: Proto
        count: int
        identity: str | None

    assert spec_fields(Spec("demo", Proto.HTTP, 5, None)) == {
        "namespace": "demo",
        "protocol": "HTTP",
        "count": 5,
        "identity": None,
    }
    with pytest.raises(TypeError):
        spec_fields(Spec)
    with pytest.raises(TypeError, match="not a JSON scalar"):
        spec_fields(Spec("demo", Proto.HTTP, 5, ["x"]))  # type: ignore[arg-type]
