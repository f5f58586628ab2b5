"""Kept probe runs as a table, and several runs side by side (``/runs``, ``/runs/compare``, JSON).

Thin: snapshots and the comparison come from ``app.probe.compare``. Registered before the probe
router, whose ``/runs/{run_id}`` and ``/api/v1/probes/{run_id}`` would otherwise claim these paths.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse

from app.probe.compare import (
    MAX_COMPARED,
    Comparison,
    RunSnapshot,
    compare,
    of_service,
    parse_run_ids,
    snapshot,
)
from app.state import AppState
from app.web.deps import StateDep, TemplatesDep
from app.web.params import OptionalNameQuery
from app.web.probe_json import ComparisonOut
from app.web.render import fragment, page, wants_fragment

router = APIRouter()

IdsQuery = Annotated[
    list[str],
    Query(max_length=MAX_COMPARED * 13, description=f"2 to {MAX_COMPARED} run ids: ids=a,b or ids=a&ids=b"),
]


def snapshots(state: AppState) -> list[RunSnapshot]:
    """Every kept run, newest first (none when the runner is not running)."""
    runner = state.probe_runner
    return [snapshot(r) for r in runner.runs()] if runner is not None else []


def service_runs(state: AppState, namespace: str, service: str, limit: int = 10) -> list[RunSnapshot]:
    return of_service(snapshots(state), namespace, service, limit)


def comparison(state: AppState, raw_ids: list[str]) -> Comparison:
    try:
        ids = parse_run_ids(raw_ids)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    kept = {s.id: s for s in snapshots(state)}
    missing = [i for i in ids if i not in kept]
    if missing:
        raise HTTPException(
            404, f"probe run(s) {', '.join(missing)} not found (only the most recent runs are kept)"
        )
    return compare([kept[i] for i in ids])


@router.get("/runs", response_class=HTMLResponse, include_in_schema=False)
async def runs_page(
    request: Request,
    state: StateDep,
    templates: TemplatesDep,
    namespace: OptionalNameQuery = "",
    service: OptionalNameQuery = "",
) -> HTMLResponse:
    """The kept runs (optionally of one Service), with checkboxes to compare them."""
    runs = snapshots(state)
    if namespace and service:
        runs = of_service(runs, namespace, service, len(runs))
    if wants_fragment(request):
        return HTMLResponse(fragment(templates, "partials/_run_table.html", runs=runs))
    return page(request, "pages/runs.html", runs=runs, namespace=namespace, service=service)


@router.get("/runs/compare", response_class=HTMLResponse, include_in_schema=False)
async def compare_page(request: Request, state: StateDep, ids: IdsQuery) -> HTMLResponse:
    return page(request, "pages/run_compare.html", c=comparison(state, ids))


@router.get("/api/v1/probes/compare", tags=["probes"], response_model=ComparisonOut)
async def compare_api(state: StateDep, ids: IdsQuery) -> ComparisonOut:
    """Per-pod shares of 2 to 6 runs side by side, with each run's origin, client and verdict."""
    return ComparisonOut.of(comparison(state, ids))
