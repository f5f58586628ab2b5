"""A watch's re-picks and exact first/last hits in the run store: round trip, bounded, replaced on retry, gone
with the run, and a store written by the previous schema version migrates forward."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from app.probe.watch import MAX_REPICKS, Repick, Second, Series, measure
from app.store import schema as store_schema
from app.store.records import Kind
from app.store.watchfacts import NO_FACTS, WatchFacts
from tests.unit.store.factory import end, open_store, start

REPICKS = [Repick(3.25, "web-0", "web-1", 7.125, True), Repick(9.5, "web-1", "<b>web-2</b>", 0.5, False)]


def test_facts_round_trip_and_moved_hits_replace_the_old(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.begin(start("w1", total=0, kind=Kind.WATCH))
    store.add_watch_facts("w1", [(0, REPICKS[0])], [("web-0", 0.012, 3.0), ("web-1", 3.25, 3.25)])
    store.add_watch_facts(
        "w1", [(0, REPICKS[0]), (1, REPICKS[1])], [("web-1", 3.25, 9.0)]
    )  # a retry, then new
    store.finish("w1", end([]))
    assert store.watch_facts("w1") == WatchFacts(
        tuple(REPICKS), (("web-0", 0.012, 3.0), ("web-1", 3.25, 9.0))
    )
    assert store.watch_facts("unknown") == NO_FACTS


def test_only_the_newest_repicks_are_kept_and_a_deleted_run_takes_its_facts(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.begin(start("w1", total=0, kind=Kind.WATCH))
    many = [(i, Repick(float(i), "a", "b", 1.0, False)) for i in range(MAX_REPICKS + 7)]
    store.add_watch_facts("w1", many, [])
    kept = store.watch_facts("w1").repicks
    assert len(kept) == MAX_REPICKS and kept[0].at_s == 7.0
    store.finish("w1", end([]))
    with sqlite3.connect(tmp_path / "runs.db") as db:
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("DELETE FROM runs WHERE id = 'w1'")
        assert db.execute("SELECT count(*) FROM watch_repicks").fetchone()[0] == 0


def test_a_store_of_the_previous_version_migrates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    previous = store_schema.MIGRATIONS[:2]
    with monkeypatch.context() as m:
        m.setattr(store_schema, "MIGRATIONS", previous)
        m.setattr(store_schema, "VERSION", 2)
        old = open_store(tmp_path)
        old.begin(start("w0", total=0, kind=Kind.WATCH))
        old.finish("w0", end([]))
        old.close()
    store = open_store(tmp_path)
    assert store.watch_facts("w0") == NO_FACTS  # stored before re-picks were: none, no error
    store.close()
    with sqlite3.connect(tmp_path / "runs.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3


def test_stored_facts_make_a_restored_series_exact() -> None:
    seconds = [Second(0, 2, 0, (("web-0", 2),), (), 1.0, 1.0), Second(3, 1, 0, (("web-1", 1),), (), 1.0, 1.0)]
    coarse = Series.restored(seconds)
    exact = Series.restored(seconds, hits=[("web-0", 0.012, 0.5), ("web-1", 3.25, 3.25)], repicks=REPICKS[:1])
    assert (coarse.first_hit["web-1"], exact.first_hit["web-1"]) == (3.0, 3.25)
    assert exact.last_hit["web-0"] == 0.5
    assert measure(exact, []).repicks == (REPICKS[0],) and measure(coarse, []).repicks == ()
    assert exact.repicks_since(0) == [(0, REPICKS[0])] and exact.repicks_since(1) == []
