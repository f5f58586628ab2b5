"""Watches over the web: JSON API, CSV of the per-second series, the live page and its SSE stream.

Thin: validation of the wire format here, the watch itself in ``app.probe.watchrun`` / ``app.watching``.
The timeline is inline SVG drawn by a template from the geometry computed here (no chart library); the
stream sends it again at most once per second, and a reload renders the same SVG without JavaScript.
Pod names, event texts and error kinds reach the page only through auto-escaped templates.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field

from app.probe.spec import Method
from app.probe.targets import ProbeProtocol
from app.probe.watch import Distribution, Event, EventKind, Measurements, Second
from app.probe.watchrun import Watch, WatchSpec
from app.store import Kind, Missing, RunRecord, SecondAggregate
from app.watching import WatchManager
from app.web.deps import StateDep, TemplatesDep
from app.web.params import Name, RunIdPath
from app.web.render import fragment, page
from app.web.security import csrf_token

router = APIRouter()

PALETTE = 12
CHART_S = 120  # seconds the live chart shows (the JSON and CSV have every kept second)
UPDATE_S = 1.0  # the stream sends the timeline at most this often
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


# -- JSON ---------------------------------------------------------------------------------------


def _second_json(s: Second | SecondAggregate) -> dict[str, Any]:
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


def watch_json(w: Watch, manager: WatchManager, *, seconds: bool = True) -> dict[str, Any]:
    spec = w.spec
    cal = w.run.calibration
    out: dict[str, Any] = {
        "id": w.id,
        "status": w.status.value,
        "error": w.error,
        "url": f"/watches/{w.id}",
        "namespace": spec.namespace,
        "service": spec.service,
        "target": w.target.label,
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
        "client_pod": w.client_pod,
        "session_affinity": w.affinity,
        "attribution": {"mode": cal.mode.value, "note": cal.note},
        "elapsed_s": round(w.elapsed_s, 3),
        "requests": w.series.requests,
        "in_flight": w.in_flight,
        "skipped": w.skipped,
        "total": _dist_json(w.series.total()),
        "rolling": _dist_json(w.series.window(w.elapsed_s, spec.window_s)),
        "events": [_event_json(e) for e in w.events],
        "events_dropped": w.events_dropped,
        "measurements": _measurements_json(w.measurements()),
        "saved": w.id not in manager.not_saved and manager.store is not None,
        "not_saved": manager.not_saved.get(w.id),
    }
    if seconds:
        out["seconds"] = [_second_json(s) for s in w.series.seconds()]
    return out


async def stored_watch(manager: WatchManager, watch_id: str) -> tuple[RunRecord, list[SecondAggregate]]:
    """A watch no longer in memory (e.g. from before a restart) as the run store kept it: its record and
    per-second series (events and derived numbers are not stored). 404 when neither has it."""
    store = manager.store
    if store is not None:
        record = await store.record(watch_id)
        if isinstance(record, RunRecord) and record.kind == Kind.WATCH:
            return record, await store.seconds(watch_id)
        if isinstance(record, Missing) and record.since is not None:
            raise HTTPException(404, f"watch {watch_id}: {record.reason}")
    raise HTTPException(404, f"watch {watch_id} not found (only the last {manager.bounds.kept} are kept)")


def stored_json(record: RunRecord, seconds: Sequence[SecondAggregate]) -> dict[str, Any]:
    t = record.target
    return {
        "id": record.id,
        "status": record.status,
        "error": record.error,
        "stored": True,  # from the run store: the per-second series only
        "namespace": t.namespace,
        "service": t.service,
        "target": f"{t.address}:{t.port}/{t.protocol}",
        "spec": dict(record.spec),
        "client_pod": record.client_pod,
        "elapsed_s": record.elapsed_s,
        "requests": sum(s.requests for s in seconds),
        "seconds": [_second_json(s) for s in seconds],
    }


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
    return [watch_json(w, manager, seconds=False) for w in manager.watches()]


@router.get("/api/v1/watches/{watch_id}.csv", tags=["watches"], response_class=Response)
async def watch_csv(watch_id: RunIdPath, state: StateDep) -> Response:
    """The per-second series, one row per (second, pod) and per (second, error kind)."""
    manager = get_manager(state)
    w = manager.get(watch_id)
    seconds: Sequence[Second | SecondAggregate]
    seconds = w.series.seconds() if w is not None else (await stored_watch(manager, watch_id))[1]
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
    manager = get_manager(state)
    w = manager.get(watch_id)
    if w is None:
        return stored_json(*await stored_watch(manager, watch_id))
    return watch_json(w, manager)


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


# -- the timeline -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    cls: str
    title: str


@dataclass(frozen=True, slots=True)
class Marker:
    x: float
    cls: str
    title: str


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    bars_h: int
    errors_y: int
    errors_h: int
    latency_y: int
    latency_h: int
    height: int
    first: int  # the first second shown
    last: int
    max_requests: int
    max_latency: float
    bars: tuple[Rect, ...]
    errors: tuple[Rect, ...]
    p50: str  # polyline points
    p95: str
    markers: tuple[Marker, ...]
    ticks: tuple[tuple[float, int], ...]  # (x, second)


def colors_of(w: Watch) -> dict[str, int]:
    names = sorted(set(w.series.hits) | set(w.run.known))
    return {name: i % PALETTE for i, name in enumerate(names)}


def chart(w: Watch, colors: dict[str, int], span: int = CHART_S) -> Chart:
    width, bars_h, errors_h, latency_h, gap = 900, 160, 30, 70, 8
    errors_y = bars_h + gap
    latency_y = errors_y + errors_h + gap
    height = latency_y + latency_h + 14
    now = max(0, int(w.elapsed_s))
    first = max(0, now - span + 1)
    seconds: Sequence[Second] = w.series.seconds(after=first - 1)
    bw = width / span
    max_req = max((s.requests for s in seconds), default=1) or 1
    max_err = max((s.error_count for s in seconds), default=1) or 1
    max_lat = max((s.p95_ms or 0.0 for s in seconds), default=0.0) or 1.0
    bars: list[Rect] = []
    errors: list[Rect] = []
    p50: list[str] = []
    p95: list[str] = []
    for s in seconds:
        x = (s.second - first) * bw
        y = float(bars_h)
        for pod, n in s.hits:
            h = n / max_req * bars_h
            y -= h
            bars.append(Rect(x, y, bw * 0.9, h, f"f{colors.get(pod, 0)}", f"second {s.second}: {pod} {n}"))
        if s.unattributed:
            h = s.unattributed / max_req * bars_h
            y -= h
            bars.append(Rect(x, y, bw * 0.9, h, "funk", f"second {s.second}: unattributed {s.unattributed}"))
        if s.errors:
            h = s.error_count / max_err * errors_h
            text = ", ".join(f"{k} {n}" for k, n in s.errors)
            errors.append(Rect(x, errors_y + errors_h - h, bw * 0.9, h, "ferr", f"second {s.second}: {text}"))
        cx = x + bw * 0.45
        for points, value in ((p50, s.p50_ms), (p95, s.p95_ms)):
            if value is not None:
                points.append(f"{cx:.1f},{latency_y + latency_h - value / max_lat * latency_h:.1f}")
    markers = tuple(
        Marker((e.at_s - first) * bw, _marker_class(e), f"{e.at_s:.1f} s: {e.text}")
        for e in w.events
        if e.at_s >= first
    )
    step = 10 if span <= 120 else 60
    ticks = tuple(((t - first) * bw, t) for t in range((first + step - 1) // step * step, first + span, step))
    return Chart(
        width,
        bars_h,
        errors_y,
        errors_h,
        latency_y,
        latency_h,
        height,
        first,
        now,
        max_req,
        max_lat,
        tuple(bars),
        tuple(errors),
        " ".join(p50),
        " ".join(p95),
        markers,
        ticks,
    )


def _marker_class(e: Event) -> str:
    if e.kind == EventKind.SERVICE or e.kind == EventKind.GONE:
        return "mk-svc"
    if e.kind in (EventKind.READY, EventKind.ADDED):
        return "mk-up"
    return "mk-down"


def watch_context(w: Watch, manager: WatchManager, token: str) -> dict[str, Any]:
    colors = colors_of(w)
    return {
        "w": w,
        "chart": chart(w, colors),
        "colors": colors,
        "total": w.series.total(),
        "rolling": w.series.window(w.elapsed_s, w.spec.window_s),
        "m": w.measurements(),
        "events": list(w.events)[-50:],
        "not_saved": manager.not_saved.get(w.id),
        "saved": manager.store is not None and w.id not in manager.not_saved,
        "csrf_token": token,
    }


def _token(request: Request) -> str:
    return csrf_token(request)


@router.post("/watches", include_in_schema=False, response_model=None)
async def start_watch_form(form: Annotated[WatchForm, Form()], state: StateDep) -> Response:
    """The Service page's Watch form: a redirect to the watch's page (errors render as error pages)."""
    w = get_manager(state).start(form.spec())
    return RedirectResponse(f"/watches/{w.id}", status_code=303)


@router.get("/watches/{watch_id}", response_class=HTMLResponse, include_in_schema=False)
async def watch_page(request: Request, watch_id: RunIdPath, state: StateDep) -> HTMLResponse:
    manager = get_manager(state)
    w = _watch_or_404(manager, watch_id)
    return page(request, "pages/watch.html", **watch_context(w, manager, _token(request)))


# The live fragment of each watch, rendered at most once per FRAME_S however many viewers follow it (they
# all get the same HTML). Weak keys: a watch the manager forgot takes its frame with it.
_frames: weakref.WeakKeyDictionary[Watch, tuple[float, str]] = weakref.WeakKeyDictionary()
FRAME_S = 0.5


def live_frame(w: Watch, manager: WatchManager, templates: Jinja2Templates, token: str) -> str:
    now = time.monotonic()
    frame = _frames.get(w)
    if frame is None or now - frame[0] >= FRAME_S:
        # The fragment has no form (the stop button is outside it), so one token serves every viewer.
        frame = (now, fragment(templates, "partials/_watch_live.html", **watch_context(w, manager, token)))
        _frames[w] = frame
    return frame[1]


@router.get("/watches/{watch_id}/stream", include_in_schema=False, response_class=EventSourceResponse)
async def watch_stream(
    request: Request, watch_id: RunIdPath, state: StateDep, templates: TemplatesDep
) -> AsyncIterator[ServerSentEvent]:
    """The live timeline (event ``timeline``) once per second on a steady schedule; ``done`` with the final
    block when the watch ends. The hub's closing (shutdown) ends the stream too."""
    manager = get_manager(state)
    w = _watch_or_404(manager, watch_id)
    token = _token(request)
    loop = asyncio.get_running_loop()
    with state.hub.subscribe(lambda _: False) as sub:  # counted as an SSE client; closed on shutdown
        due = loop.time()
        while not sub.closed:
            if w.finished:
                ctx = watch_context(w, manager, token)
                yield ServerSentEvent(
                    raw_data=fragment(templates, "partials/_watch_block.html", **ctx), event="done"
                )
                return
            yield ServerSentEvent(raw_data=live_frame(w, manager, templates, token), event="timeline")
            due = max(due + UPDATE_S, loop.time())  # a steady beat: no drift from render time
            try:
                async with asyncio.timeout(due - loop.time()):
                    await w.done.wait()
            except TimeoutError:
                pass
