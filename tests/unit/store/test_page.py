"""Listing stored runs a page at a time: newest first, by keyset, of one kind and optionally one Service."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from app.store import Missing, PageQuery, RunPage, RunStore
from app.store.db import MAX_PAGE
from app.store.records import Status
from tests.unit.store.factory import NOW, TARGET, finished_run, open_store, start


def ids(page: RunPage | Missing) -> list[str]:
    assert isinstance(page, RunPage), page
    return [r.id for r in page.records]


def all_pages(store: RunStore, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    before = None
    while True:
        page = store.page(PageQuery(limit, before))
        assert isinstance(page, RunPage), page
        pages.append([r.id for r in page.records])
        if page.older is None:
            return pages
        assert len(pages) < 100, "the pages never end"
        before = page.older


def test_pages_walk_every_run_once_newest_first(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    for i in range(7):
        finished_run(store, f"r{i}", created=NOW + i)
    assert all_pages(store, 3) == [["r6", "r5", "r4"], ["r3", "r2", "r1"], ["r0"]]
    assert all_pages(store, 7) == [["r6", "r5", "r4", "r3", "r2", "r1", "r0"]]  # full, and no empty next page
    assert all_pages(store, 50) == [["r6", "r5", "r4", "r3", "r2", "r1", "r0"]]


def test_runs_created_in_the_same_instant_are_neither_repeated_nor_skipped(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    for i in range(5):
        finished_run(store, f"r{i}", created=NOW)  # one clock tick: the insertion order breaks the tie
    assert all_pages(store, 2) == [["r4", "r3"], ["r2", "r1"], ["r0"]]


def test_a_run_started_while_paging_does_not_shift_the_older_pages(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    for i in range(4):
        finished_run(store, f"r{i}", created=NOW + i)
    first = store.page(PageQuery(2))
    assert ids(first) == ["r3", "r2"] and isinstance(first, RunPage)
    finished_run(store, "new", created=NOW + 10)
    assert ids(store.page(PageQuery(2, first.older))) == ["r1", "r0"]


def test_only_runs_of_the_kind_and_service_asked_for(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    finished_run(store, "a", created=NOW)
    store.begin(start("w", created=NOW + 1, kind="watch", total=0))
    other = dataclasses.replace(
        start("b", created=NOW + 2), target=dataclasses.replace(TARGET, service="web")
    )
    store.begin(other)
    assert ids(store.page()) == ["b", "a"]  # probe runs only, by default; a running one too
    assert ids(store.page(PageQuery(kind=None))) == ["b", "w", "a"]
    assert ids(store.page(PageQuery(namespace="demo", service="web"))) == ["b"]
    assert [r.status for r in store.page().records] == [Status.RUNNING, Status.DONE]  # type: ignore[union-attr]


def test_a_cursor_run_that_is_gone_says_why(tmp_path: Path) -> None:
    store = open_store(tmp_path, max_runs=2)
    for i in range(3):
        finished_run(store, f"r{i}", created=NOW + i)
    store.prune()
    gone = store.page(PageQuery(2, "r0"))
    assert isinstance(gone, Missing) and "beyond the newest 2 runs" in gone.reason
    never = store.page(PageQuery(2, "0123456789ab"))
    assert isinstance(never, Missing)


@pytest.mark.parametrize("limit", [0, -1, MAX_PAGE + 1])
def test_a_page_is_bounded(tmp_path: Path, limit: int) -> None:
    store = open_store(tmp_path)
    with pytest.raises(ValueError, match="a page holds"):
        store.page(PageQuery(limit))
