"""The runs table and the comparison over the run store: runs from before a restart are listed (a page at a
time, with their status, "interrupted at 30/100" included) and can be compared, also those the process no
longer keeps in memory; without a store, the runs in memory."""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

import httpx
import pytest

from app.store import Batch, RunStore, StoreConfig
from app.web.compare import RUNS_PER_PAGE
from tests.unit.fakes import make_cluster
from tests.unit.store.factory import TARGET, end, outcomes, start
from tests.unit.web.test_probes import BODY, client, wait_done
from tests.unit.web.test_probes_store import dashboard

pytestmark = pytest.mark.timeout(60)
__all__ = ["client"]  # the in-memory fixture, shared with the probe route tests

STORED = RUNS_PER_PAGE + 12  # more than one page, and more than the 50 runs a process keeps in memory
EARLIER = time.time() - 86_400  # the runs were made yesterday (runs started by a test come after them)


def run_id(i: int) -> str:
    return f"{i:012x}"


def fill(path: Path) -> None:
    """What an earlier dashboard left: STORED finished runs of demo/web, and one cut short at 30/100."""
    store = RunStore.open(StoreConfig(path))
    web = dataclasses.replace(TARGET, service="web")
    for i in range(STORED):
        results = outcomes(20)
        store.begin(dataclasses.replace(start(run_id(i), created=EARLIER + i), target=web))
        store.finish(run_id(i), end(results, at=EARLIER + i + 1), Batch(outcomes=tuple(results)))
    store.begin(dataclasses.replace(start(run_id(999), created=EARLIER + 1000), target=web))
    store.append(run_id(999), Batch(outcomes=tuple(outcomes(30))))
    store.close()  # the process died mid-run: the next one marks it interrupted


def rows(html: str) -> list[str]:
    return re.findall(r'data-testid="run-row" data-run="([0-9a-f]{12})"', html)


def older_link(html: str) -> str | None:
    found = re.search(r'href="(/runs\?[^"]*before=[0-9a-f]{12})"', html)
    return found.group(1).replace("&amp;", "&") if found else None


async def test_stored_runs_are_listed_a_page_at_a_time_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    fill(path)
    async for cluster in make_cluster(3):
        async with dashboard(cluster, path) as (c, state):
            assert state.probe_runner is not None and len(state.probe_runner.runs()) == 50
            first = await c.get("/runs")
            assert first.status_code == 200
            assert rows(first.text) == [run_id(999), *(run_id(i) for i in range(STORED - 1, 12, -1))]
            interrupted = first.text.split(f'data-run="{run_id(999)}"')[1].split("</tr>")[0]
            assert 'data-testid="run-status">interrupted<' in interrupted
            assert "interrupted at 30/100" in interrupted
            link = older_link(first.text)
            assert link == f"/runs?before={run_id(13)}"
            second = await c.get(link)
            # The runs no process keeps in memory any more, oldest last; no further page.
            assert rows(second.text) == [run_id(i) for i in range(12, -1, -1)]
            assert older_link(second.text) is None and 'data-testid="runs-newest"' in second.text

            # A run started now is on top of the first page, live; the older pages do not move.
            new = (await c.post("/api/v1/probes", json=BODY)).json()["id"]
            await wait_done(c, new)
            assert rows((await c.get("/runs")).text)[:2] == [new, run_id(999)]
            assert rows((await c.get(link)).text) == rows(second.text)


async def test_runs_of_one_service_and_the_service_page_include_stored_ones(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    fill(path)
    async for cluster in make_cluster(3):
        async with dashboard(cluster, path) as (c, _):
            of_web = await c.get("/runs?namespace=demo&service=web")
            assert rows(of_web.text)[0] == run_id(999) and len(rows(of_web.text)) == RUNS_PER_PAGE
            link = older_link(of_web.text)
            assert link is not None and "namespace=demo&service=web&before=" in link
            assert rows((await c.get("/runs?namespace=demo&service=other")).text) == []
            page = await c.get("/services/demo/web")
            recent = page.text.split('id="recent-runs-table"')[1]
            assert rows(recent)[:2] == [run_id(999), run_id(STORED - 1)]


async def test_runs_only_the_store_keeps_can_be_compared(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    fill(path)
    async for cluster in make_cluster(3):
        async with dashboard(cluster, path) as (c, state):
            assert state.probe_runner is not None
            assert state.probe_runner.get(run_id(0)) is None  # not in memory: only the store has it
            ids = f"{run_id(0)},{run_id(1)},{run_id(999)}"
            page = await c.get(f"/runs/compare?ids={ids}")
            assert page.status_code == 200, page.text
            assert page.text.count('data-testid="compare-run"') == 3
            api = (await c.get(f"/api/v1/probes/compare?ids={ids}")).json()
            assert [r["id"] for r in api["runs"]] == [run_id(0), run_id(1), run_id(999)]
            assert [r["done"] for r in api["runs"]] == [20, 20, 30]


async def test_a_page_or_comparison_of_a_deleted_run_says_why(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    fill(path)
    store = RunStore.open(StoreConfig(path, max_runs=10))
    store.prune()  # retention deleted the oldest
    store.close()
    async for cluster in make_cluster(3):
        async with dashboard(cluster, path) as (c, _):
            r = await c.get(f"/runs?before={run_id(0)}", headers={"Accept": "application/json"})
            assert r.status_code == 404 and "deleted by retention" in r.json()["detail"], r.text
            r = await c.get(f"/api/v1/probes/compare?ids={run_id(0)},{run_id(999)}")
            assert r.status_code == 404 and "deleted by retention" in r.json()["detail"], r.text
            assert (await c.get("/runs?before=nothex")).status_code == 422


async def test_without_a_store_the_runs_in_memory_are_listed(
    client: tuple[httpx.AsyncClient, object],
) -> None:
    c, _ = client
    ids = [(await c.post("/api/v1/probes", json=BODY)).json()["id"] for _ in range(2)]
    for i in ids:
        await wait_done(c, i)
    page = await c.get("/runs")
    assert rows(page.text) == ids[::-1] and "no run store is configured" in page.text
    assert older_link(page.text) is None
    assert (await c.get(f"/runs/compare?ids={','.join(ids)}")).status_code == 200
    r = await c.get("/runs?before=0123456789ab", headers={"Accept": "application/json"})
    assert r.status_code == 404 and "no longer kept in memory" in r.json()["detail"]


async def test_the_json_list_pages_through_stored_runs_with_a_next_link(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    fill(path)
    async for cluster in make_cluster(3):
        async with dashboard(cluster, path) as (c, _):
            first = await c.get("/api/v1/probes?limit=20")
            assert first.status_code == 200, first.text
            listed = [r["id"] for r in first.json()]
            assert listed == [run_id(999), *(run_id(i) for i in range(STORED - 1, STORED - 20, -1))]
            interrupted = first.json()[0]
            assert interrupted["status"] == "interrupted" and interrupted["done"] == 30
            nxt_page = f"/api/v1/probes?limit=20&before={run_id(STORED - 19)}"
            assert first.headers["link"] == f'<{nxt_page}>; rel="next"'
            seen = listed
            nxt: str | None = first.headers["link"][1:].split(">")[0]
            while nxt is not None and len(seen) <= STORED + 1:  # bounded: one page per 20 runs
                page = await c.get(nxt)
                seen += [r["id"] for r in page.json()]
                link = page.headers.get("link")
                nxt = link[1:].split(">")[0] if link else None
            assert seen == [run_id(999), *(run_id(i) for i in range(STORED - 1, -1, -1))]
            # The runs of one Service, and bad paging input: the same rules as the table's.
            of_other = await c.get("/api/v1/probes?namespace=demo&service=other")
            assert of_other.json() == [] and "link" not in of_other.headers
            for bad in ("limit=0", "limit=1000", "before=nothex", "namespace=Bad_NS&service=web"):
                r = await c.get(f"/api/v1/probes?{bad}")
                assert r.status_code == 422, (bad, r.text)
