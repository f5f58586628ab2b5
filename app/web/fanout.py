"""Fan-out runs over the web: "from every node" and "many clients" (``app.probe.fanout``).

Thin: the request is checked here, the clients are ordinary probe-pod runs started together by the
runner (its bounds and RBAC checks apply), and the matrix is built by ``app.probe.fanout``. The page is
complete on reload without JavaScript and follows the runs live over SSE.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field

from app.catalog.query import unanswerable
from app.config import Settings
from app.domain import ObjectKey
from app.probe import fanout
from app.probe.run import RUN_ID_PATTERN, Run, new_run_id
from app.probe.spec import ProbeSpec
from app.probe.targets import ProbeProtocol
from app.state import AppState
from app.store import Missing
from app.web.deps import SettingsDep, StateDep, TemplatesDep
from app.web.params import Name
from app.web.probes import get_runner
from app.web.render import fragment, page, wants_fragment

router = APIRouter()

FanoutIdPath = Annotated[str, Path(pattern=RUN_ID_PATTERN, description="fan-out id")]


class FanoutRequest(BaseModel):
    """Start one probe pod per node (mode ``nodes``) or ``clients`` probe pods (mode ``clients``)."""

    model_config = ConfigDict(extra="forbid")

    namespace: Name
    service: Name
    port: Name | int
    protocol: ProbeProtocol = ProbeProtocol.HTTP
    mode: fanout.Mode = fanout.Mode.NODES
    clients: int = Field(5, description="mode clients: probe pods; at most SVCSCOPE_PROBE_FANOUT_MAX_CLIENTS")
    count: int = Field(20, description="requests per client; at most SVCSCOPE_PROBE_MAX_COUNT")
    path: str = Field("/", min_length=1, max_length=512)
    timeout_s: float = Field(1.0, description="per request; at most SVCSCOPE_PROBE_MAX_TIMEOUT_S")

    def spec(self) -> ProbeSpec:
        return ProbeSpec(
            namespace=self.namespace,
            service=self.service,
            port=str(self.port),
            protocol=self.protocol,
            count=self.count,
            path=self.path,
            timeout_s=self.timeout_s,
        )


class FanoutForm(FanoutRequest):
    model_config = ConfigDict(extra="ignore")  # csrf_token travels in the same form


class FanoutStarted(BaseModel):
    id: str
    runs: list[str]
    skipped: list[dict[str, str]]
    url: str
    api: str


def start(state: AppState, settings: Settings, body: FanoutRequest) -> fanout.Fanout:
    """Start every client's run, or none (the runner admits them together)."""
    svc = state.cache.service(ObjectKey(body.namespace, body.service))
    if svc is not None and (why := unanswerable(state.cache, svc)) is not None:
        raise HTTPException(422, why)
    runner = get_runner(state)
    nodes: tuple[str, ...] = ()
    skipped: tuple[fanout.Skipped, ...] = ()
    if body.mode is fanout.Mode.NODES:
        if (why := state.cache.nodes_unknown()) is not None:
            raise HTTPException(409, f"'from every node' needs the list of nodes: {why}")
        nodes, skipped = fanout.client_nodes(state.cache.nodes())
    specs = fanout.member_specs(
        body.spec(), body.mode, nodes=nodes, clients=body.clients, most=settings.probe_fanout_max_clients
    )
    runs = runner.start_many(specs)  # domain errors become HTTP answers in app.web.errors
    for run in runs:
        state.hub.publish(run)
    spec = replace(runs[0].spec, node=None)  # as validated: what every client was asked to do
    started = fanout.Fanout(new_run_id(), body.mode, spec, tuple(r.id for r in runs), skipped)
    state.fanouts.add(started)
    return started


async def found_fanout(fanout_id: FanoutIdPath, state: StateDep) -> fanout.Fanout:
    found = state.fanouts.get(fanout_id)
    if found is None:
        raise HTTPException(404, f"fan-out {fanout_id}: not kept (fan-outs live in this process's memory)")
    return found


FoundFanout = Annotated[fanout.Fanout, Depends(found_fanout)]


async def runs_of(state: AppState, fan: fanout.Fanout) -> list[Run | Missing]:
    return [await state.find_run(run_id) for run_id in fan.run_ids]


async def matrix_of(state: AppState, fan: fanout.Fanout) -> fanout.Matrix:
    observations = [
        fanout.missing(run_id, found.reason) if isinstance(found, Missing) else fanout.observation_of(found)
        for run_id, found in zip(fan.run_ids, await runs_of(state, fan), strict=True)
    ]
    zones = {n.name: n.zone for n in state.cache.nodes()}
    svc = state.cache.service(ObjectKey(fan.spec.namespace, fan.spec.service))
    affinity = svc is not None and svc.session_affinity == "ClientIP"
    return fanout.matrix(fan, observations, zones, client_ip_affinity=affinity)


def matrix_json(m: fanout.Matrix, fan: fanout.Fanout) -> dict[str, Any]:
    return {
        "id": fan.id,
        "mode": m.mode.value,
        "service": f"{fan.spec.namespace}/{fan.spec.service}",
        "port": fan.spec.port,
        "finished": m.finished,
        "as_expected": m.as_expected,
        "verdict": list(m.lines),
        "client_ip_affinity": m.client_ip_affinity,
        "distinct_pods": m.distinct_pods,
        "stuck_clients": m.stuck_clients,
        "columns": [asdict(c) for c in m.columns],
        "error_kinds": list(m.error_kinds),
        "skipped": [asdict(s) for s in m.skipped],
        "rows": [
            {
                "label": r.label,
                "run": r.obs.run_id,
                "status": r.obs.status,
                "client_pod": r.obs.client_pod,
                "client_ip": r.obs.client_ip,
                "node": r.obs.client_node,
                "zone": r.zone,
                "done": r.obs.done,
                "total": r.obs.total,
                "hits": dict(r.obs.hits),
                "errors": dict(r.obs.errors),
                "unattributed": r.obs.unattributed,
                "expected": list(r.expected),
                "fate": r.fate,
                "state": r.state.value,
                "as_expected": r.state in (fanout.RowState.AS_EXPECTED, fanout.RowState.DROPPED),
                "verdict": list(r.lines),
                "pods_used": r.pods_used,
                "error": r.obs.error,
            }
            for r in m.rows
        ],
    }


# -- JSON API ---------------------------------------------------------------------------------


@router.post("/api/v1/fanouts", status_code=202, response_model=FanoutStarted, tags=["probes"])
async def start_fanout(body: FanoutRequest, state: StateDep, settings: SettingsDep) -> FanoutStarted:
    """Start a fan-out; poll ``GET /api/v1/fanouts/{id}`` or follow ``/fanouts/{id}``."""
    fan = start(state, settings, body)
    return FanoutStarted(
        id=fan.id,
        runs=list(fan.run_ids),
        skipped=[asdict(s) for s in fan.skipped],
        url=f"/fanouts/{fan.id}",
        api=f"/api/v1/fanouts/{fan.id}",
    )


@router.get("/api/v1/fanouts/{fanout_id}", tags=["probes"])  # noqa: FAST003 (fanout_id is FoundFanout's)
async def get_fanout(fan: FoundFanout, state: StateDep) -> dict[str, Any]:
    """The client-by-pod matrix: per row the expected pods, the hits, the errors and the verdict."""
    return matrix_json(await matrix_of(state, fan), fan)


# -- HTML ------------------------------------------------------------------------------------


@router.post("/fanouts", include_in_schema=False, response_model=None)
async def start_fanout_form(
    form: Annotated[FanoutForm, Form()], state: StateDep, settings: SettingsDep
) -> Response:
    fan = start(state, settings, form)
    return RedirectResponse(f"/fanouts/{fan.id}", status_code=303)


def _context(m: fanout.Matrix, fan: fanout.Fanout) -> dict[str, Any]:
    return {"fan": fan, "m": m}


@router.get("/fanouts/{fanout_id}", response_class=HTMLResponse, include_in_schema=False)  # noqa: FAST003 (fanout_id is FoundFanout's)
async def fanout_page(
    request: Request, fan: FoundFanout, state: StateDep, templates: TemplatesDep
) -> HTMLResponse:
    m = await matrix_of(state, fan)
    if wants_fragment(request):
        return HTMLResponse(fragment(templates, "partials/_fanout.html", **_context(m, fan)))
    return page(request, "pages/fanout.html", **_context(m, fan))


async def _any_change(runs: list[Run], timeout_s: float) -> None:
    """Until one of the runs has a new result or ends (or ``timeout_s``: a pod's IP or node may show)."""
    waits = [asyncio.create_task(r.wait_changed()) for r in runs if not r.finished]
    if not waits:
        return
    try:
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*waits, return_exceptions=True)


WAKE_S = 1.0  # the matrix is re-read at least this often (client IPs and nodes arrive without a result)


@router.get("/fanouts/{fanout_id}/stream", include_in_schema=False, response_class=EventSourceResponse)  # noqa: FAST003 (fanout_id is FoundFanout's)
async def fanout_stream(
    fan: FoundFanout, state: StateDep, settings: SettingsDep, templates: TemplatesDep
) -> AsyncIterator[ServerSentEvent]:
    """``matrix`` while the clients run (at most one per coalescing interval), then ``done``: the final
    block, which has no stream."""
    interval = settings.stream_interval_s
    while True:
        m = await matrix_of(state, fan)
        if m.finished:
            yield ServerSentEvent(raw_data=_render(templates, m, fan), event="done")
            return
        html = fragment(templates, "partials/_fanout_matrix.html", **_context(m, fan))
        yield ServerSentEvent(raw_data=html, event="matrix")
        began = time.monotonic()
        live = [r for r in await runs_of(state, fan) if isinstance(r, Run)]
        await _any_change(live, WAKE_S)
        await asyncio.sleep(max(interval - (time.monotonic() - began), 0.0))


def _render(templates: Jinja2Templates, m: fanout.Matrix, fan: fanout.Fanout) -> str:
    return fragment(templates, "partials/_fanout.html", **_context(m, fan))
