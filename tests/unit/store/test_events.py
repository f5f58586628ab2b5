"""A watch's cluster events in the run store: round trip, bounded per watch, retried writes, gone with its
run."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.probe.watch import Event, EventKind
from app.store import StoreError
from app.store.events import NO_EVENTS, WatchEvents
from app.store.records import Kind
from tests.unit.store.factory import end, open_store, start

EVENTS = [
    Event(0.4, EventKind.ADDED, "endpoint web-3 (198.18.0.13) added (not ready)", pod="web-3"),
    Event(2.25, EventKind.READY, "endpoint web-3 (198.18.0.13) became Ready", pod="web-3"),
    Event(
        3.5,
        EventKind.SERVICE,
        "Service sessionAffinity: None → ClientIP",
        field="sessionAffinity",
        before="None",
        after="ClientIP",
    ),
    Event(4.0, EventKind.TERMINATING, "endpoint <b>web-0</b> began terminating", pod="<b>web-0</b>"),
]


def test_events_round_trip_in_the_order_seen(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.begin(start("w1", total=0, kind=Kind.WATCH))
    store.add_events("w1", list(enumerate(EVENTS[:2])))
    store.add_events("w1", [(2, EVENTS[2]), (3, EVENTS[3])])
    store.finish("w1", end([]))
    assert store.events("w1") == WatchEvents(tuple(EVENTS), 0)  # every field, markup kept as plain text
    assert store.events("unknown") == NO_EVENTS


def test_a_retried_write_replaces_instead_of_doubling(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.begin(start("w1", total=0, kind=Kind.WATCH))
    store.add_events("w1", [(0, EVENTS[0]), (1, EVENTS[1])])
    store.add_events("w1", [(1, EVENTS[1]), (2, EVENTS[2])])
    assert store.events("w1").events == tuple(EVENTS[:3])


def test_only_the_newest_events_are_kept_and_the_rest_counted(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.begin(start("w1", total=0, kind=Kind.WATCH))
    many = [(i, Event(float(i), EventKind.READY, f"event {i}", pod=f"p{i}")) for i in range(620)]
    for chunk in range(0, 620, 100):
        store.add_events("w1", many[chunk : chunk + 100])
    kept = store.events("w1")
    assert len(kept.events) == 500 and kept.dropped == 120
    assert kept.events[0].text == "event 120" and kept.events[-1].text == "event 619"


def test_an_ended_watch_takes_no_more_events_and_deleting_it_takes_them(tmp_path: Path) -> None:
    store = open_store(tmp_path, max_runs=1)
    store.begin(start("w1", total=0, kind=Kind.WATCH))
    store.add_events("w1", [(0, EVENTS[0])])
    store.finish("w1", end([]))
    with pytest.raises(StoreError, match="already ended"):
        store.add_events("w1", [(1, EVENTS[1])])
    store.begin(start("w2", total=0, kind=Kind.WATCH, created=2e9))
    store.finish("w2", end([]))
    assert [t.id for t in store.prune()] == ["w1"]
    assert store.events("w1") == NO_EVENTS
    with store._read() as db:  # the rows went with the run (ON DELETE CASCADE), not only out of sight
        assert db.execute("SELECT count(*) FROM watch_events").fetchone()[0] == 0
