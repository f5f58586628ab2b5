"""Probe runs as a table, and several runs side by side (``/runs``, ``/runs/compare``, JSON).

Thin: snapshots and the comparison come from ``app.probe.compare``. The table lists the runs of the run
store a page at a time (so runs from before a restart are listed, with their status: "interrupted at
30/100" ...), with the runs this process has in memory laid over them (a running run shows its live
progress); without a store, only the runs kept in memory. Registered before the probe router, whose
``/runs/{run_id}`` and ``/api/v1/probes/{run_id}`` would otherwise claim these paths. The JSON list
``GET /api/v1/probes`` is paged the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response

from app.probe.compare import (
    MAX_COMPARED,
    Comparison,
    RunSnapshot,
    compare,
    parse_run_ids,
    snapshot,
)
from app.probe.run import RUN_ID_PATTERN, Run
from app.state import NOT_KEPT, AppState
from app.store import Kind, Missing, PageQuery, RunPage, StoreError
from app.store.runs import restored
from app.web.deps import StateDep, TemplatesDep
from app.web.params import OptionalNameQuery
from app.web.probe_json import ComparisonOut, RunOut
from app.web.render import fragment, page, wants_fragment

log = logging.getLogger(__name__)

router = APIRouter()

RUNS_PER_PAGE = 50  # rows of /runs: one bounded store query and one bounded render per page
SERVICE_RUNS = 10  # rows of a Service page's Recent runs

IdsQuery = Annotated[
    list[str],
    Query(max_length=MAX_COMPARED * 13, description=f"2 to {MAX_COMPARED} run ids: ids=a,b or ids=a&ids=b"),
]
LimitQuery = Annotated[int, Query(ge=1, le=RUNS_PER_PAGE * 2, description="runs per page")]
BeforeQuery = Annotated[
    str | None,
    Query(pattern=RUN_ID_PATTERN, description="the next page: runs older than this run (the page's 'older')"),
]


@dataclass(frozen=True, slots=True)
class RunsPage:
    """One page of the runs table: newest first; ``older`` is the next page's cursor (None: the last)."""

    runs: list[RunSnapshot]
    older: str | None = None
    stored: bool = False  # listed from the run store (else: only what this process keeps in memory)
    problem: str | None = None  # why the store could not be read (the page then shows the memory's runs)


@dataclass(frozen=True, slots=True)
class RunsFound:
    """One page of runs as ``Run`` objects (live ones as this process has them, stored ones restored)."""

    runs: list[Run]
    older: str | None = None
    stored: bool = False
    problem: str | None = None


def live_runs(state: AppState) -> list[Run]:
    """The runs this process keeps in memory, newest first (none when the runner is not running)."""
    runner = state.probe_runner
    return runner.runs() if runner is not None else []


def _live(state: AppState, run_id: str) -> Run | None:
    runner = state.probe_runner
    return runner.get(run_id) if runner is not None else None


def _of_service(run: Run, namespace: str, service: str) -> bool:
    return not (namespace and service) or (run.spec.namespace, run.spec.service) == (namespace, service)


def _in_memory(state: AppState, namespace: str, service: str, limit: int, before: str | None) -> RunsFound:
    runs = [r for r in live_runs(state) if _of_service(r, namespace, service)]
    if before is not None:
        at = next((i for i, r in enumerate(runs) if r.id == before), None)
        if at is None:
            raise HTTPException(
                404, f"probe run {before}, where this page starts, is no longer kept in memory"
            )
        runs = runs[at + 1 :]
    return RunsFound(runs[:limit], runs[limit - 1].id if len(runs) > limit else None)


async def find_runs(
    state: AppState, *, namespace: str = "", service: str = "", limit: int, before: str | None = None
) -> RunsFound:
    """A page of runs (of one Service when ``namespace`` and ``service`` are given), newest first: from
    the run store when there is one, with this process's runs laid over them; else from memory."""
    store = state.store
    if store is None:
        return _in_memory(state, namespace, service, limit, before)
    one = namespace and service
    query = PageQuery(limit, before, namespace if one else None, service if one else None, Kind.RUN)
    try:
        found = await store.page(query)
    except StoreError as exc:
        log.error("listing stored runs: %s", exc.message)
        fallback = _in_memory(state, namespace, service, limit, None)
        return RunsFound(fallback.runs, None, problem=f"the run store could not be read ({exc.message})")
    if isinstance(found, Missing):
        raise HTTPException(404, f"probe run {before}, where this page starts: {found.reason}")
    return RunsFound(
        _overlay(state, found, namespace, service, first=before is None), found.older, stored=True
    )


async def runs_page(
    state: AppState, *, namespace: str = "", service: str = "", limit: int, before: str | None = None
) -> RunsPage:
    """A page of the runs table (of one Service when ``namespace`` and ``service`` are given)."""
    found = await find_runs(state, namespace=namespace, service=service, limit=limit, before=before)
    return RunsPage([snapshot(r) for r in found.runs], found.older, found.stored, found.problem)


def _overlay(state: AppState, found: RunPage, namespace: str, service: str, *, first: bool) -> list[Run]:
    """The stored runs of a page, each as this process has it if it has it in memory (a running run's
    live progress); the first page also gets the runs of this process the store does not have (their
    start could not be recorded), where they belong in time."""
    runs = []
    for record in found.records:
        live = _live(state, record.id)
        runs.append(live if live is not None else restored(record))
    if first:
        listed = {r.id for r in found.records}
        oldest = found.records[-1].created if found.older is not None else float("-inf")
        unsaved = [
            r
            for r in live_runs(state)
            if r.id not in listed and r.created >= oldest and _of_service(r, namespace, service)
        ]
        if unsaved:
            runs = sorted([*runs, *unsaved], key=lambda r: r.created, reverse=True)
    return runs


async def service_runs(
    state: AppState, namespace: str, service: str, limit: int = SERVICE_RUNS
) -> list[RunSnapshot]:
    """The newest runs of one Service (stored ones too: a Service page after a restart keeps its runs)."""
    return (await runs_page(state, namespace=namespace, service=service, limit=limit)).runs


async def find_snapshot(state: AppState, run_id: str) -> RunSnapshot | Missing:
    """One run as the tables show it: from memory, else from the store (without its per-request rows)."""
    run = _live(state, run_id)
    if run is not None:
        return snapshot(run)
    if state.store is None:
        return Missing(run_id, NOT_KEPT)
    try:
        found = await state.store.record(run_id)
    except StoreError as exc:
        return Missing(run_id, f"the run store could not be read ({exc.message})")
    if isinstance(found, Missing):
        return found
    if found.kind != Kind.RUN:
        return Missing(run_id, "it is a watch, not a probe run: open it from the Service page's watches")
    return snapshot(restored(found))


async def comparison(state: AppState, raw_ids: list[str]) -> Comparison:
    try:
        ids = parse_run_ids(raw_ids)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    found = [await find_snapshot(state, i) for i in ids]
    missing = [f for f in found if isinstance(f, Missing)]
    if missing:
        raise HTTPException(404, "; ".join(f"probe run {m.id} not found: {m.reason}" for m in missing))
    return compare([f for f in found if isinstance(f, RunSnapshot)])


@router.get("/runs", response_class=HTMLResponse, include_in_schema=False)
async def runs_list(
    request: Request,
    state: StateDep,
    templates: TemplatesDep,
    namespace: OptionalNameQuery = "",
    service: OptionalNameQuery = "",
    before: BeforeQuery = None,
) -> HTMLResponse:
    """The runs (optionally of one Service), newest first, a page at a time, with checkboxes to compare."""
    listing = await runs_page(
        state,
        namespace=namespace,
        service=service,
        limit=SERVICE_RUNS if wants_fragment(request) else RUNS_PER_PAGE,
        before=before,
    )
    if wants_fragment(request):  # the Service page's Recent runs table, refreshed
        return HTMLResponse(fragment(templates, "partials/_run_table.html", runs=listing.runs))
    return page(
        request,
        "pages/runs.html",
        runs=listing.runs,
        listing=listing,
        namespace=namespace,
        service=service,
        first_page=before is None,
    )


@router.get("/api/v1/probes", tags=["probes"], response_model=list[RunOut])
async def list_probes(
    request: Request,
    response: Response,
    state: StateDep,
    namespace: OptionalNameQuery = "",
    service: OptionalNameQuery = "",
    before: BeforeQuery = None,
    limit: LimitQuery = RUNS_PER_PAGE,
) -> list[RunOut]:
    """The runs, newest first (without per-request sequences), a page at a time: stored runs too, so
    runs from before a restart are listed. The next page's address is in the ``Link`` header
    (``rel="next"``), absent on the last page."""
    found = await find_runs(state, namespace=namespace, service=service, limit=limit, before=before)
    if found.older is not None:
        nxt = request.url.include_query_params(before=found.older)
        response.headers["Link"] = f'<{nxt.path}?{nxt.query}>; rel="next"'
    if found.problem is not None:
        response.headers["Warning"] = f'199 svcscope "{found.problem}"'
    return [RunOut.of(r, r.summary()) for r in found.runs]


@router.get("/runs/compare", response_class=HTMLResponse, include_in_schema=False)
async def compare_page(request: Request, state: StateDep, ids: IdsQuery) -> HTMLResponse:
    return page(request, "pages/run_compare.html", c=await comparison(state, ids))


@router.get("/api/v1/probes/compare", tags=["probes"], response_model=ComparisonOut)
async def compare_api(state: StateDep, ids: IdsQuery) -> ComparisonOut:
    """Per-pod shares of 2 to 6 runs side by side, with each run's origin, client and verdict (runs kept in
    memory or in the run store)."""
    return ComparisonOut.of(await comparison(state, ids))
