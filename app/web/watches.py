"""Watches over the web: JSON API, CSV of the per-second series, the live page and its SSE stream.

Thin: validation of the wire format here, the watch itself in ``app.probe.watchrun`` / ``app.watching``.
The timeline is a strip of small inline SVGs, one per second (``app.web.watchchart``: no chart library);
the stream appends each new second once a second, drawn once for all viewers, and a reload renders the same
strip without JavaScript. A watch no longer in memory (a restarted dashboard) is shown from the run store:
its per-second series and its cluster events. Pod names, event texts and error kinds reach the page only
through auto-escaped templates.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field

from app.probe.spec import Method
from app.probe.targets import ProbeProtocol
from app.probe.verdicts import routing_for
from app.probe.watch import Distribution, Event, EventKind, Measurements, Repick, Second, Series, measure
from app.probe.watchrun import Watch, WatchSpec
from app.routing import Routing
from app.store import Kind, Missing, RunRecord, WatchEvents, WatchFacts
from app.store.watchfacts import NO_FACTS
from app.watching import WatchManager
from app.web.deps import StateDep, TemplatesDep
from app.web.params import Name, RunIdPath
from app.web.probe_json import RoutingOut
from app.web.render import fragment, page
from app.web.security import csrf_token
from app.web.watchchart import CHART_S, GEOMETRY, Column, Feed, Scale, colors_of, columns, feed_of, sse_event

router = APIRouter()

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # as FastAPI's event streams
CSV_COLUMNS = ("second", "requests", "pod", "hits", "error", "errors", "unattributed", "p50_ms", "p95_ms")


class WatchRequest(BaseModel):
    """Start a watch: probe a Service's ClusterIP continuously at ``rate`` requests/s."""

    model_config = ConfigDict(extra="forbid")

    namespace: Name
    service: Name
    port: Name | int
    protocol: ProbeProtocol = ProbeProtocol.HTTP
    # Bounds are the manager's (SVCSCOPE_WATCH_*), checked by WatchSpec.validated: one source of limits.
    rate: float = Field(20.0, description="requests per second; SVCSCOPE_WATCH_MIN_RATE..MAX_RATE")
    duration_s: float = Field(
        300.0, description="stops by itself after this; at most SVCSCOPE_WATCH_MAX_DURATION_S"
    )
    window_s: int = Field(10, description="span of the rolling distribution, seconds")
    method: Method = "GET"
    path: str = Field("/", min_length=1, max_length=512)
    timeout_s: float = Field(2.0, description="per request; at most SVCSCOPE_WATCH_MAX_TIMEOUT_S")
    identity: str | None = Field(None, max_length=200, description="header:NAME | regex:PATTERN | json:FIELD")

    def spec(self) -> WatchSpec:
        return WatchSpec(
            namespace=self.namespace,
            service=self.service,
            port=str(self.port),
            protocol=self.protocol,
            rate=self.rate,
            duration_s=self.duration_s,
            window_s=self.window_s,
            method=self.method,
            path=self.path,
            timeout_s=self.timeout_s,
            identity=self.identity or None,
        )


class WatchForm(WatchRequest):
    model_config = ConfigDict(extra="ignore")  # csrf_token travels in the same form
    identity: str | None = Field(None, max_length=200)


def get_manager(state: StateDep) -> WatchManager:
    manager = state.watches
    if manager is None:
        raise HTTPException(503, "watches are not available (the app is not started)")
    return manager


def _watch_or_404(manager: WatchManager, watch_id: str) -> Watch:
    watch = manager.get(watch_id)
    if watch is None:
        raise HTTPException(404, f"watch {watch_id} not found (only the last {manager.bounds.kept} are kept)")
    return watch


# -- what a page and the JSON show, from memory or from the store -----------------------------------


@dataclass(frozen=True, slots=True)
class WatchView:
    id: str
    spec: WatchSpec
    target: str  # address:port/protocol
    client_pod: str | None
    status: str
    finished: bool
    error: str | None
    elapsed_s: float
    in_flight: int
    skipped: int
    affinity: str
    attribution: str  # the attribution mode
    series: Series
    events: tuple[Event, ...]
    events_dropped: int
    saved: bool
    saved_final: bool  # its end is in the run store too (a restart keeps it as it ended)
    not_saved: str | None
    stored: bool  # read back from the run store
    # Expected versus observed over the rolling window, for the dashboard's node and the endpoints now
    # (None: the node is unknown, or the watch was read back from the store).
    routing: Routing | None = None

    @property
    def requests(self) -> int:
        return self.series.requests

    def measurements(self) -> Measurements:
        return measure(self.series, self.events)

    def rolling(self) -> Distribution:
        return self.series.window(self.elapsed_s, self.spec.window_s)


def live_view(w: Watch, manager: WatchManager) -> WatchView:
    saved = manager.store is not None and w.id not in manager.not_saved
    window = w.series.window(w.elapsed_s, w.spec.window_s)
    verdict = routing_for(
        manager.view,
        w.target,
        manager.dashboard_node,
        manager.dashboard_ip,
        dict(window.hits),
        dict(window.errors),
        fresh_picks=_expected_repicks(w.series.repicks, w.elapsed_s - w.spec.window_s),
    )
    return WatchView(
        id=w.id,
        spec=w.spec,
        target=w.target.label,
        client_pod=w.client_pod,
        status=w.status.value,
        finished=w.finished,
        error=w.error,
        elapsed_s=w.elapsed_s,
        in_flight=w.in_flight,
        skipped=w.skipped,
        affinity=w.affinity,
        attribution=w.run.calibration.mode.value,
        series=w.series,
        events=tuple(w.events),
        events_dropped=w.events_dropped,
        saved=saved,
        saved_final=saved and w.task is not None and w.task.done(),
        not_saved=manager.not_saved.get(w.id),
        stored=False,
        routing=verdict,
    )


def _expected_repicks(repicks: Sequence[Repick], since_s: float) -> int:
    """Re-picks in the window that followed an idle gap longer than the timeout; 0 if any did not (then
    the verdict says that more than one pod answered a ClientIP client)."""
    recent = [r for r in repicks if r.at_s >= since_s]
    return len(recent) if all(r.expected for r in recent) else 0


def stored_view(
    record: RunRecord, seconds: Sequence[Second], events: WatchEvents, facts: WatchFacts = NO_FACTS
) -> WatchView:
    series = Series.restored(seconds, hits=facts.hits, repicks=facts.repicks)
    last = max((s.second for s in seconds), default=-1)
    affinity = record.target.session_affinity
    for e in events.events:
        if e.kind == EventKind.SERVICE and e.field == "sessionAffinity" and e.after:
            affinity = e.after
    t = record.target
    return WatchView(
        id=record.id,
        spec=_spec_of(record),
        target=f"{t.address}:{t.port}/{t.protocol}",
        client_pod=record.client_pod,
        status=record.status,
        finished=True,
        error=record.error,
        elapsed_s=record.elapsed_s if record.elapsed_s is not None else float(last + 1),
        in_flight=0,
        skipped=0,
        affinity=affinity,
        attribution=record.attribution.mode if record.attribution else "none",
        series=series,
        events=events.events,
        events_dropped=events.dropped,
        saved=True,
        saved_final=record.is_finished,
        not_saved=None,
        stored=True,
    )


def _spec_of(record: RunRecord) -> WatchSpec:
    """The watch's spec as stored (fields this version does not know are ignored; missing ones default)."""
    t = record.target
    names = {f.name for f in dataclasses.fields(WatchSpec)}
    values: dict[str, Any] = {k: v for k, v in record.spec.items() if k in names and v is not None}
    values.update(namespace=t.namespace, service=t.service)
    values.setdefault("port", t.port_name or str(t.port))
    try:
        values["protocol"] = ProbeProtocol(str(values.get("protocol", t.protocol)))
    except ValueError:
        values["protocol"] = ProbeProtocol.TCP
    return WatchSpec(**values)


async def view_of(manager: WatchManager, watch_id: str) -> WatchView:
    """The watch in memory, else as the run store kept it; 404 when neither has it."""
    w = manager.get(watch_id)
    if w is not None:
        return live_view(w, manager)
    store = manager.store
    if store is not None:
        record = await store.record(watch_id)
        if isinstance(record, RunRecord) and record.kind == Kind.WATCH:
            seconds, events, facts = await asyncio.gather(
                store.seconds(watch_id), store.events(watch_id), store.watch_facts(watch_id)
            )
            return stored_view(record, seconds, events, facts)
        if isinstance(record, Missing) and record.since is not None:
            raise HTTPException(404, f"watch {watch_id}: {record.reason}")
    raise HTTPException(404, f"watch {watch_id} not found (only the last {manager.bounds.kept} are kept)")


# -- JSON ---------------------------------------------------------------------------------------


def _second_json(s: Second) -> dict[str, Any]:
    return {
        "second": s.second,
        "requests": s.requests,
        "hits": dict(s.hits),
        "errors": dict(s.errors),
        "unattributed": s.unattributed,
        "p50_ms": s.p50_ms,
        "p95_ms": s.p95_ms,
    }


def _dist_json(d: Distribution) -> dict[str, Any]:
    return {
        "requests": d.requests,
        "hits": dict(d.hits),
        "errors": dict(d.errors),
        "unattributed": d.unattributed,
    }


def _event_json(e: Event) -> dict[str, Any]:
    return {"at_s": e.at_s, "kind": e.kind, "text": e.text, "pod": e.pod, "field": e.field}


def _measurements_json(m: Measurements) -> dict[str, Any]:
    return {
        "ready_to_first_hit": [
            {"pod": x.pod, "ready_s": x.event_s, "first_hit_s": x.hit_s, "lag_s": x.lag_s}
            for x in m.ready_to_first_hit
        ],
        "gone_to_last_hit": [
            {"pod": x.pod, "gone_s": x.event_s, "last_hit_s": x.hit_s, "lag_s": x.lag_s}
            for x in m.gone_to_last_hit
        ],
        "change_errors": dict(m.change_errors),
        "affinity_convergence": [
            {
                "at_s": c.at_s,
                "before": c.before,
                "after": c.after,
                "converged_after_s": c.matched_s,
                "pod": c.pod,
            }
            for c in m.convergence
        ],
        "clientip_repicks": [
            {"at_s": r.at_s, "before": r.before, "after": r.after, "gap_s": r.gap_s, "expected": r.expected}
            for r in m.repicks
        ],
    }


def routing_json(r: Routing | None) -> dict[str, Any] | None:
    """Expected versus observed over the rolling window (None: no verdict), as a run's JSON has it."""
    return RoutingOut.of(r).model_dump() if r is not None else None


def watch_json(v: WatchView, *, seconds: bool = True) -> dict[str, Any]:
    spec = v.spec
    out: dict[str, Any] = {
        "id": v.id,
        "status": v.status,
        "error": v.error,
        "url": f"/watches/{v.id}",
        "stored": v.stored,  # read back from the run store: first and last hits to the second only
        "namespace": spec.namespace,
        "service": spec.service,
        "target": v.target,
        "spec": {
            "port": spec.port,
            "protocol": spec.protocol.value,
            "rate": spec.rate,
            "duration_s": spec.duration_s,
            "window_s": spec.window_s,
            "method": spec.method,
            "path": spec.path,
            "timeout_s": spec.timeout_s,
            "identity": spec.identity,
        },
        "client_pod": v.client_pod,
        "session_affinity": v.affinity,
        "attribution": {"mode": v.attribution},
        "elapsed_s": round(v.elapsed_s, 3),
        "requests": v.requests,
        "in_flight": v.in_flight,
        "skipped": v.skipped,
        "total": _dist_json(v.series.total()),
        "rolling": _dist_json(v.rolling()),
        "events": [_event_json(e) for e in v.events],
        "events_dropped": v.events_dropped,
        "measurements": _measurements_json(v.measurements()),
        "routing": routing_json(v.routing),
        "saved": v.saved,
        "saved_final": v.saved_final,
        "not_saved": v.not_saved,
    }
    if seconds:
        out["seconds"] = [_second_json(s) for s in v.series.seconds()]
    return out


class StartedWatch(BaseModel):
    id: str
    status: str
    url: str
    api: str


@router.post("/api/v1/watches", status_code=202, response_model=StartedWatch, tags=["watches"])
async def start_watch(body: WatchRequest, state: StateDep) -> StartedWatch:
    """Start a watch; follow ``/watches/{id}`` or poll ``GET /api/v1/watches/{id}``."""
    w = get_manager(state).start(body.spec())  # domain errors become HTTP answers in app.web.errors
    return StartedWatch(id=w.id, status=w.status.value, url=f"/watches/{w.id}", api=f"/api/v1/watches/{w.id}")


@router.get("/api/v1/watches", tags=["watches"])
async def list_watches(state: StateDep) -> list[dict[str, Any]]:
    """The kept watches, newest first (without the per-second series)."""
    manager = get_manager(state)
    return [watch_json(live_view(w, manager), seconds=False) for w in manager.watches()]


@router.get("/api/v1/watches/{watch_id}.csv", tags=["watches"], response_class=Response)
async def watch_csv(watch_id: RunIdPath, state: StateDep) -> Response:
    """The per-second series, one row per (second, pod) and per (second, error kind)."""
    seconds = (await view_of(get_manager(state), watch_id)).series.seconds()
    buf = io.StringIO()
    out = csv.writer(buf)
    out.writerow(CSV_COLUMNS)
    for s in seconds:
        p50 = "" if s.p50_ms is None else f"{s.p50_ms:.3f}"
        p95 = "" if s.p95_ms is None else f"{s.p95_ms:.3f}"
        rows: list[tuple[object, ...]] = [(pod, n, "", "") for pod, n in s.hits]
        rows += [("", "", kind, n) for kind, n in s.errors]
        for pod, hits, kind, errors in rows or [("", "", "", "")]:
            out.writerow(
                [
                    csv_cell(v)
                    for v in (s.second, s.requests, pod, hits, kind, errors, s.unattributed, p50, p95)
                ]
            )
    return Response(
        buf.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="watch-{watch_id}.csv"'},
    )


def csv_cell(value: object) -> str:
    """A cell a spreadsheet will not run as a formula (a pod name or error kind is the cluster's data)."""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@router.get("/api/v1/watches/{watch_id}", tags=["watches"])
async def get_watch(watch_id: RunIdPath, state: StateDep) -> dict[str, Any]:
    """Status, whole-run and rolling distributions, events, derived measurements and the per-second series."""
    return watch_json(await view_of(get_manager(state), watch_id))


class StopOut(BaseModel):
    id: str
    stopped: bool
    status: str


@router.post("/api/v1/watches/{watch_id}/stop", status_code=202, tags=["watches"], response_model=None)
async def stop_watch(watch_id: RunIdPath, request: Request, state: StateDep) -> StopOut | Response:
    manager = get_manager(state)
    w = _watch_or_404(manager, watch_id)
    stopped = manager.stop(watch_id)
    if "application/json" not in request.headers.get("accept", "") and "hx-request" not in request.headers:
        return RedirectResponse(f"/watches/{w.id}", status_code=303)  # the page's plain form
    return StopOut(id=w.id, stopped=stopped, status=w.status.value)


# -- pages and the stream --------------------------------------------------------------------------


def view_context(v: WatchView, token: str) -> dict[str, Any]:
    """Everything ``_watch_block.html`` needs: a running watch shows the strip's last ``CHART_S`` seconds
    that are over; a finished one every kept second."""
    kept = v.series.seconds()
    if v.finished:
        first = kept[0].second if kept else 0
        last = max(math.ceil(v.elapsed_s) - 1, kept[-1].second if kept else -1)
    else:
        last = math.floor(v.elapsed_s) - 1
        first = max(0, last - CHART_S + 1)
    return {
        "v": v,
        "columns": columns(v.series, v.events, v.spec, first, last),
        "after": last,
        "g": GEOMETRY,
        "scale": Scale.of(v.spec),
        "chart_max": CHART_S,
        **panels_context(v),
        "csrf_token": token,
    }


def panels_context(v: WatchView) -> dict[str, Any]:
    colors = colors_of(v.series)
    return {
        "v": v,
        "colors": colors,
        "total": v.series.total(),
        "rolling": v.rolling(),
        "m": v.measurements(),
        "events": list(v.events)[-50:],
    }


@router.post("/watches", include_in_schema=False, response_model=None)
async def start_watch_form(form: Annotated[WatchForm, Form()], state: StateDep) -> Response:
    """The Service page's Watch form: a redirect to the watch's page (errors render as error pages)."""
    w = get_manager(state).start(form.spec())
    return RedirectResponse(f"/watches/{w.id}", status_code=303)


@router.get("/watches/{watch_id}", response_class=HTMLResponse, include_in_schema=False)
async def watch_page(request: Request, watch_id: RunIdPath, state: StateDep) -> HTMLResponse:
    v = await view_of(get_manager(state), watch_id)
    return page(request, "pages/watch.html", **view_context(v, csrf_token(request)))


def live_feed(w: Watch, manager: WatchManager, templates: Jinja2Templates) -> Feed:
    def render_column(watch_id: str, c: Column) -> str:
        return fragment(templates, "partials/_watch_second.html", wid=watch_id, c=c, g=GEOMETRY)

    def render_panels(w: Watch) -> str:
        return fragment(templates, "partials/_watch_tick.html", **panels_context(live_view(w, manager)))

    return feed_of(w, render_column, render_panels)


@router.get("/watches/{watch_id}/stream", include_in_schema=False, response_class=StreamingResponse)
async def watch_stream(
    request: Request,
    watch_id: RunIdPath,
    state: StateDep,
    templates: TemplatesDep,
    after: Annotated[int, Query(ge=-1, le=10**6, description="the last second the page shows")] = -1,
) -> StreamingResponse:
    """Event ``timeline`` just after each whole second of the watch: the seconds this viewer lacks (to append
    to the strip), recent ones drawn again (out of band) and the status and panels; ``done`` with the final
    block when the watch ends. The hub's closing (shutdown) ends the stream too.

    A plain stream of pre-encoded events rather than FastAPI's event-source machinery (a producer task,
    two memory streams, a keep-alive timer per event): with 20 viewers that machinery cost more per
    second than drawing the timeline. No keep-alive is needed: an event goes out at least every second."""
    manager = get_manager(state)
    w = _watch_or_404(manager, watch_id)
    feed = live_feed(w, manager, templates)

    async def events() -> AsyncIterator[bytes]:
        have, since = after, -1
        with state.hub.subscribe(lambda _: False) as sub:  # counted as an SSE client; closed on shutdown
            while not sub.closed:
                if w.finished:
                    block = feed.final(lambda: final_block(w, manager, templates))
                    yield sse_event("done", block)
                    return
                feed.update()
                data, have, since = feed.event(have, since)
                yield data
                await feed.beat()

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


def final_block(w: Watch, manager: WatchManager, templates: Jinja2Templates) -> str:
    # A finished watch's block has no form, so it needs no viewer's own token.
    return fragment(templates, "partials/_watch_block.html", **view_context(live_view(w, manager), ""))
