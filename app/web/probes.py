"""Probe runs over the web: JSON API, form posts, the permanent run page and its SSE stream.

Thin: validation of the wire format here, everything else in ``app.probe``. Probed response bodies
only ever reach the page through auto-escaped templates (truncated samples in ``<pre>``).

Long on purpose: the routes of one resource (a run: create, read, CSV, page, stream, cancel); each is
short, and they share the lookups that turn a missing run into the reason it is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import functools
import io
import math
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask

from app.catalog.execpick import ExecChoices
from app.catalog.nodes import unknown_node
from app.catalog.query import unanswerable
from app.catalog.reach import probe_protocol
from app.domain import SUBDOMAIN_MAX, ObjectKey, Origin, ServicePort
from app.probe.offer import origin_refusal
from app.probe.run import Run
from app.probe.runner import ProbeRunner
from app.probe.spec import Limits, Method, ProbeSpec, max_concurrency
from app.probe.stats import Outcome, Summary
from app.probe.targets import ProbeProtocol
from app.state import AppState
from app.store import Missing
from app.web.deps import SettingsDep, StateDep, TemplatesDep
from app.web.errors import DOMAIN_ERRORS, http_error
from app.web.execpicker import picker, with_pick
from app.web.params import Name, NameQuery, PodName, RunIdPath
from app.web.podrows import ALL_PODS, pod_rows
from app.web.probe_json import CancelOut, RunDetailOut
from app.web.render import fragment, page, wants_fragment
from app.web.runstrip import StripLog
from app.web.security import csrf_token

router = APIRouter()

PALETTE = 12
# The strip of a run shows at most STRIP_MAX cells: a longer run shows its first and last STRIP_MAX // 2
# requests and how many are left out (the CSV has every one). Bounded so that a finished 10,000-request
# run is not a 2 MB fragment per viewer; the live strip stops appending at STRIP_MAX.
STRIP_MAX = 2_000
FIRST_RESULTS_WAIT_S = 0.15  # at most this long before the answer to a probe click
# What the htmx form shows in place (htmx does not swap 4xx answers).
SHOWN_IN_PLACE: tuple[type[Exception], ...] = (HTTPException, *DOMAIN_ERRORS)
CSV_COLUMNS = tuple("seq at_ms connection pod ip node latency_ms error status method reason".split())


class ProbeRequest(BaseModel):
    """Start a probe run against a watched Service's ClusterIP and one of its ports."""

    model_config = ConfigDict(extra="forbid")

    namespace: Name
    service: Name
    port: Name | int
    protocol: ProbeProtocol = ProbeProtocol.HTTP
    # The bounds of count, concurrency and timeout_s are the runner's (SVCSCOPE_PROBE_MAX_*): checked by
    # ProbeSpec.validated, so a configured limit is the one limit.
    count: int = Field(100, description="requests; at most SVCSCOPE_PROBE_MAX_COUNT")
    concurrency: int = Field(10, description="requests in flight; at most SVCSCOPE_PROBE_MAX_CONCURRENCY")
    reuse: bool = False
    method: Method = "GET"
    path: str = Field("/", min_length=1, max_length=512)
    timeout_s: float = Field(2.0, description="per request; at most SVCSCOPE_PROBE_MAX_TIMEOUT_S")
    identity: str | None = Field(None, max_length=200, description="header:NAME | regex:PATTERN | json:FIELD")
    origin: Origin = Field(
        Origin.DASHBOARD,
        description="dashboard (this process), probe-pod or exec — the last two only when enabled",
    )
    exec_pod: PodName | None = Field(
        None,
        description="origin exec: the pod (any running pod; it needs sh and curl, wget, nc, python3 or bash)",
    )
    exec_namespace: Name | None = Field(
        None, description="origin exec: the pod's namespace (default: the Service's; must be writable)"
    )
    exec_container: Name | None = Field(None, description="origin exec: the container (default: the first)")
    node: PodName | None = Field(None, description="origin probe-pod: the node to run the probe pod on")
    interval_s: float = Field(
        0.0, description="paced run: seconds to wait after each request (concurrency 1)"
    )
    pause_after: int = Field(0, description="paced run: pause after every pause_after-th request (0: never)")
    pause_s: float = Field(
        0.0, description="paced run: seconds of that pause (e.g. longer than the ClientIP timeout)"
    )

    def spec(self) -> ProbeSpec:
        return ProbeSpec(
            namespace=self.namespace,
            service=self.service,
            port=str(self.port),
            protocol=self.protocol,
            count=self.count,
            concurrency=self.concurrency,
            reuse=self.reuse,
            method=self.method,
            path=self.path,
            timeout_s=self.timeout_s,
            identity=self.identity or None,
            origin=self.origin,
            exec_pod=self.exec_pod or None,
            exec_namespace=self.exec_namespace or None,
            exec_container=self.exec_container or None,
            node=self.node or None,
            interval_s=self.interval_s,
            pause_after=self.pause_after,
            pause_s=self.pause_s,
        )


class ProbeForm(ProbeRequest):
    model_config = ConfigDict(extra="ignore")  # csrf_token travels in the same form
    identity: str | None = Field(None, max_length=200)
    # Empty form fields are "not given"; ProbeSpec.validated checks the names.
    exec_pod: str | None = Field(None, max_length=SUBDOMAIN_MAX)
    exec_namespace: str | None = Field(None, max_length=SUBDOMAIN_MAX)
    exec_container: str | None = Field(None, max_length=SUBDOMAIN_MAX)
    node: str | None = Field(None, max_length=SUBDOMAIN_MAX)
    # The exec picker's "namespace/pod/container"; it wins over the typed names.
    exec_pick: str | None = Field(None, max_length=3 * SUBDOMAIN_MAX)

    def spec(self) -> ProbeSpec:
        return with_pick(super().spec(), self.exec_pick)


@dataclass(frozen=True, slots=True)
class ProbePanel:
    """What the probe form offers: the enabled origins and the runner's bounds (None: no runner yet), and
    why an enabled origin would be refused for this Service (origin value -> reason: shown, not offered)."""

    origins: tuple[Origin, ...]
    limits: Limits | None
    refusals: Mapping[str, str] = field(default_factory=dict)
    fanout_max: int = 1  # the most probe pods of one fan-out (SVCSCOPE_PROBE_FANOUT_MAX_CLIENTS)
    exec_choices: ExecChoices = field(default_factory=ExecChoices)

    def concurrency_limits(self) -> dict[str, int]:
        """Origin -> most requests in flight, for the form (one source: the probe spec's rule)."""
        if self.limits is None:
            return {}
        return {o.value: max_concurrency(o, self.limits) for o in self.origins}

    @staticmethod
    def protocol_for(port: ServicePort) -> str:
        """The protocol the form preselects for a port (UDP for UDP, appProtocol and name honoured)."""
        return probe_protocol(port)


# Where an exec origin's pod name goes in a refusal shown before a pod is chosen: any pod of the namespace.
ANY_POD = "*"


def panel(state: AppState, service: ObjectKey | None = None) -> ProbePanel:
    runner = state.probe_runner
    if runner is None:
        return ProbePanel((Origin.DASHBOARD,), None)
    refusals = origin_refusals(runner, service, state.cache.namespaces())
    return ProbePanel(
        runner.origins,
        runner.limits,
        refusals,
        fanout_max=state.settings.probe_fanout_max_clients,
        exec_choices=picker(state.cache, runner),
    )


def origin_refusals(
    runner: ProbeRunner, service: ObjectKey | None, namespaces: Sequence[str] = ()
) -> dict[str, str]:
    """Why each enabled remote origin would be refused for this Service: the very check the runner makes
    before such a run (``app.probe.remote.refusal``, with the write policy it was started with), so the
    form never offers what the server refuses, and says why."""
    if runner.remote is None or service is None:
        return {}
    out: dict[str, str] = {}
    for origin in runner.origins:
        if origin is Origin.DASHBOARD:
            continue
        spec = ProbeSpec(service.namespace, service.name, "", origin=origin, exec_pod=ANY_POD)
        if reason := origin_refusal(runner.remote, spec, namespaces):  # exec: any writable namespace
            out[origin.value] = reason
    return out


class Started(BaseModel):
    id: str
    status: str
    url: str
    api: str


def get_runner(state: StateDep) -> ProbeRunner:
    runner = state.probe_runner
    if runner is None:
        raise HTTPException(503, "the probe runner is not running")
    return runner


def _start(state: AppState, spec: ProbeSpec) -> Run:
    """Start a run and announce it on the event hub (the Service page's Recent runs follow it)."""
    svc = state.cache.service(ObjectKey(spec.namespace, spec.service))
    if svc is not None and (why := unanswerable(state.cache, svc)) is not None:
        raise HTTPException(422, why)  # refused before sending: every request would only fail
    if spec.node and spec.origin is Origin.PROBE_POD:
        node = spec.validated(get_runner(state).limits).node or ""  # a malformed name says so first
        if (why := unknown_node(state.cache, node)) is not None:
            raise HTTPException(422, why)  # the pod would wait for a kubelet that does not exist
    run = get_runner(state).start(spec)  # domain errors become HTTP answers in app.web.errors
    state.hub.publish(run)
    return run


async def find_or_404(state: AppState, run_id: str) -> Run:
    """The run (live, or read back from the store); a 404 that says why there is none."""
    found = await state.find_run(run_id)
    if isinstance(found, Missing):
        raise HTTPException(404, f"probe run {run_id}: {found.reason}")
    return found


async def found_run(run_id: RunIdPath, state: StateDep) -> Run:
    return await find_or_404(state, run_id)


# Resolved before a response starts: an unknown run is a 404, not a stream that breaks after its 200.
FoundRun = Annotated[Run, Depends(found_run)]


# -- JSON API ---------------------------------------------------------------------------------


@router.post("/api/v1/probes", status_code=202, response_model=Started, tags=["probes"])
async def start_probe(body: ProbeRequest, state: StateDep) -> Started:
    """Start a run; poll ``GET /api/v1/probes/{id}`` or follow ``/runs/{id}``."""
    run = _start(state, body.spec())
    return Started(id=run.id, status=run.status.value, url=f"/runs/{run.id}", api=f"/api/v1/probes/{run.id}")


@router.get("/api/v1/probes/{run_id}.csv", tags=["probes"], response_class=Response)  # noqa: FAST003 (run_id is FoundRun's)
async def probe_csv(run: FoundRun) -> Response:
    """One row per request, in request order."""
    buf = io.StringIO()
    out = csv.writer(buf)
    out.writerow(CSV_COLUMNS)
    known = run.known
    for o in sorted(run.results, key=lambda o: o.seq):
        b = known.get(o.pod) if o.pod else None
        cells: list[object] = [
            o.seq,
            f"{o.at_ms:.3f}",
            o.connection,
            o.pod or "",
            b.ip if b else "",
            (b.node or "") if b else "",
            f"{o.latency_ms:.3f}" if o.latency_ms is not None else "",
            o.error or "",
            o.status if o.status is not None else "",
            o.method or "",
            o.reason or "",
        ]
        out.writerow([csv_cell(cell) for cell in cells])
    return Response(
        buf.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="probe-{run.id}.csv"'},
    )


# OWASP's list (CSV injection), with line feed and the full-width forms some spreadsheets also read.
CSV_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def csv_cell(value: object) -> str:
    """Every cell of an export, against spreadsheet formula injection: a cell that starts with one of
    :data:`CSV_FORMULA_PREFIXES` (= + - @, tab, CR, LF) gets a leading ``'`` and so stays text."""
    text = str(value)
    return "'" + text if text.startswith(CSV_FORMULA_PREFIXES) else text


@router.get("/api/v1/probes/{run_id}", tags=["probes"], response_model=RunDetailOut)  # noqa: FAST003 (run_id is FoundRun's)
async def get_probe(run: FoundRun) -> RunDetailOut:
    """Status, per-pod hits/share/expected share/latency, unattributed, errors by kind, sequence, verdict.

    A finished run's report is frozen: read again later (even after a restart) it is the same."""
    return RunDetailOut.of(run, run.summary())


@router.post("/api/v1/probes/{run_id}/cancel", status_code=202, tags=["probes"], response_model=CancelOut)
async def cancel_probe(run_id: RunIdPath, state: StateDep) -> CancelOut:
    runner = get_runner(state)
    run = await find_or_404(state, run_id)
    cancelled = runner.cancel(run_id)
    return CancelOut(id=run.id, cancelled=cancelled, status=run.status.value)


# -- HTML ------------------------------------------------------------------------------------


def colors(run: Run, s: Summary) -> dict[str, int]:
    """A stable palette index per pod (sorted by name) for bars and the strip."""
    names = sorted({p.pod for p in s.pods} | set(run.known))
    return {name: i % PALETTE for i, name in enumerate(names)}


@dataclass(frozen=True, slots=True)
class Strip:
    """The cells a finished run's strip shows: all, or the first and last ones and how many are between."""

    head: list[Outcome]
    hidden: int
    tail: list[Outcome]


def strip_of(run: Run) -> Strip:
    if not run.finished:
        return Strip([], 0, [])
    cells = sorted(run.results, key=lambda o: o.seq)
    if len(cells) <= STRIP_MAX:
        return Strip(cells, 0, [])
    half = STRIP_MAX // 2
    return Strip(cells[:half], len(cells) - 2 * half, cells[-half:])


async def first_results(run: Run, wait_s: float) -> None:
    """Wait a moment for the first answers, so the fragment that answers the click already shows bars
    (without it the first bar waits for the run's stream to connect: one more round trip)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait_s):
            while not run.results and not run.finished:
                await run.wait_changed()


# What the answer to a probe click renders. Jinja compiles a template on its first use: ~200 ms on a loaded
# machine, paid by the first click after each start unless a page with the form compiled them beforehand.
RUN_TEMPLATES = (
    "partials/_probe_run.html",
    "partials/_probe_summary.html",
    "partials/_probe_strip_cells.html",
)


def warm_run_templates(templates: Jinja2Templates) -> None:
    """Compile the run's templates (cached by Jinja; later calls only look them up)."""
    for name in RUN_TEMPLATES:
        templates.get_template(name)


def with_warm_run_templates(response: HTMLResponse, templates: Jinja2Templates) -> HTMLResponse:
    """A page with the probe form: once it is sent, the templates its click will need are compiled."""
    response.background = BackgroundTask(warm_run_templates, templates)
    return response


def server_timing(**parts: float) -> str:
    """A ``Server-Timing`` header value: each part (seconds) as ``name;dur=ms``."""
    return ", ".join(f"{name};dur={seconds * 1000:.1f}" for name, seconds in parts.items())


def run_context(run: Run, *, every_pod: bool = False) -> dict[str, Any]:
    """What the run's templates need; ``every_pod``: a row per pod in the table even while it runs."""
    s = run.summary()
    rows = pod_rows(s, running=not run.finished, every=every_pod)
    return {
        "run": run,
        "s": s,
        "colors": colors(run, s),
        "strip": strip_of(run),
        "strip_max": STRIP_MAX,
        "pod_rows": rows,
        "every_pod": every_pod,
    }


VIEWERS_PER_INTERVAL = 25


def until_slot(now: float, phase: float, interval: float) -> float:
    """Seconds from ``now`` to this viewer's next update slot: ``phase`` into each interval.

    Viewers of one run are all woken by the same result; slept for a whole interval from there, they would
    wake together again and again, and their updates come as one burst that holds the event loop (and
    every page waiting for it) for as long as the burst takes. Each viewer keeps a slot of its own, so the
    updates spread over the interval and no viewer gets more than one per interval."""
    return interval - ((now - phase) % interval)


def live_context(
    state: AppState, run: Run, pods: str | None, interval: float
) -> tuple[tuple[str, str, int], dict[str, Any]]:
    """A running run's context, shared per moment by its viewers: the stream's, a reload, the fragment.
    A moment is half the coalescing interval, so a shared render never predates the change its viewer
    waited for, and a page drawn meanwhile is at most that much behind."""
    moment = (run.id, pods or "", int(time.monotonic() / (interval / 2)))
    context = functools.partial(run_context, run, every_pod=pods == ALL_PODS)
    return moment, state.fragments.get(("context", *moment), context)


# ?pods=all: a running run's table with a row per pod (by default a long one is cut while the run goes).
PodsQuery = Annotated[Literal["all"] | None, Query(description="all: a row per pod while the run goes")]


def final_block(state: AppState, templates: Jinja2Templates, run: Run) -> str:
    """A finished run's block, rendered once and shared by every viewer and every stream."""
    return state.fragments.get(
        ("final", run.id), lambda: fragment(templates, "partials/_probe_run.html", **run_context(run))
    )


def strip_cells(templates: Jinja2Templates, run: Run, colors: dict[str, int], start: int, end: int) -> str:
    return fragment(
        templates, "partials/_probe_strip_cells.html", cells=run.results[start:end], colors=colors
    )


def live_strip(state: AppState, templates: Jinja2Templates, run: Run, colors: dict[str, int]) -> StripLog:
    """The run's live strip shared by its viewers; a new one (all cells drawn again) when a pod's colour
    changed, so that a viewer that connects later sees every cell in the colours of the bars."""
    log = state.fragments.get(("strip", run.id), lambda: StripLog(colors))
    if log.colors != colors:
        log = StripLog(colors)
        state.fragments.put(("strip", run.id), log)
    return log


@router.post("/probes", include_in_schema=False, response_model=None)
async def start_probe_form(
    request: Request, form: Annotated[ProbeForm, Form()], state: StateDep, templates: TemplatesDep
) -> Response:
    """The Service page's form: htmx gets the live run fragment, a plain form post a redirect.

    The htmx answer carries a ``Server-Timing`` header (start, first results, render, in ms), so the time
    from a click to the first bar can be split into the server's part and the rest (network, browser)."""
    htmx = wants_fragment(request)
    began = time.perf_counter()
    try:
        run = _start(state, form.spec())
    except SHOWN_IN_PLACE as caught:
        if not htmx:
            raise
        exc = http_error(caught)
        # htmx does not swap 4xx answers: show the message in place (the status is in the fragment).
        html = fragment(templates, "partials/_probe_error.html", status=exc.status_code, message=exc.detail)
        return HTMLResponse(html, headers={"X-Probe-Status": str(exc.status_code)})
    if htmx:
        started = time.perf_counter()
        await first_results(run, FIRST_RESULTS_WAIT_S)
        waited = time.perf_counter()
        token = csrf_token(request)
        html = fragment(templates, "partials/_probe_run.html", csrf_token=token, **run_context(run))
        timing = server_timing(
            start=started - began, first=waited - started, render=time.perf_counter() - waited
        )
        # No HX-Push-Url: the user stays on the Service page, so its URL stays in the address bar.
        return HTMLResponse(html, status_code=202, headers={"Server-Timing": timing})
    return RedirectResponse(f"/runs/{run.id}", status_code=303)


@router.get("/runs/{run_id}", response_class=HTMLResponse, include_in_schema=False)
async def run_page(
    request: Request,
    run_id: RunIdPath,
    state: StateDep,
    settings: SettingsDep,
    templates: TemplatesDep,
    pods: PodsQuery = None,
) -> HTMLResponse:
    run = await find_or_404(state, run_id)
    if run.finished:
        if wants_fragment(request):
            return HTMLResponse(final_block(state, templates, run))
        return page(request, "pages/probe_run.html", **run_context(run))
    _, ctx = live_context(state, run, pods, settings.stream_interval_s)
    if wants_fragment(request):
        token = csrf_token(request)
        return HTMLResponse(fragment(templates, "partials/_probe_run.html", csrf_token=token, **ctx))
    return page(request, "pages/probe_run.html", **ctx)


@router.get("/probes/new", response_class=HTMLResponse, include_in_schema=False)
async def new_probe_page(
    request: Request,
    state: StateDep,
    templates: TemplatesDep,
    namespace: NameQuery,
    service: NameQuery,
) -> HTMLResponse:
    """The probe form on its own page (the Service page embeds the same partial)."""
    svc = state.cache.service(ObjectKey(namespace, service))
    if svc is None:
        raise HTTPException(404, f"Service {namespace}/{service} not found.")
    response = page(request, "pages/probe_new.html", service=svc, probe=panel(state, svc.key))
    return with_warm_run_templates(response, templates)


@router.get("/runs/{run_id}/stream", include_in_schema=False, response_class=EventSourceResponse)  # noqa: FAST003 (run_id is FoundRun's)
async def run_stream(
    request: Request,
    run: FoundRun,
    state: StateDep,
    settings: SettingsDep,
    templates: TemplatesDep,
    pods: PodsQuery = None,
) -> AsyncIterator[ServerSentEvent]:
    """Live updates of a run: ``summary`` (bars, errors, verdict) and ``strip`` (new cells, appended).

    The strip events carry the result cursor as their id, so a reconnecting EventSource resumes where
    it stopped (Last-Event-ID) and never duplicates or skips a cell. When the run ends (or had ended:
    a tab left open across a restart reconnects to the stored run), ``done`` replaces the live block with
    the final one, which has no stream. Fragments are rendered once per change and shared by viewers.
    """
    last = request.headers.get("last-event-id", "")
    cursor = int(last) if last.isdigit() else 0
    cursor = min(cursor, len(run.results), STRIP_MAX)
    base = settings.stream_interval_s
    phase = random.random()  # this viewer's own moment in each interval, as a share of it
    state.run_viewers[run.id] += 1
    try:
        events = _run_events(state, templates, run, pods, cursor, base, phase)
        async with contextlib.aclosing(events):
            async for event in events:
                yield event
    finally:
        state.run_viewers[run.id] -= 1
        if state.run_viewers[run.id] <= 0:
            del state.run_viewers[run.id]


def run_interval(base: float, viewers: int) -> float:
    """How often each viewer of a run gets an update: ``base`` for up to VIEWERS_PER_INTERVAL viewers, one
    more ``base`` per VIEWERS_PER_INTERVAL more. Every update of every viewer costs the event loop the same
    (the rendering is shared, the sending is not): 100 viewers at 4 updates a second doubled a run's time
    and tripled a page's wait. Paced like this, the updates of a run cost at most about
    VIEWERS_PER_INTERVAL / base sends a second, however many watch it."""
    return base * max(1, math.ceil(viewers / VIEWERS_PER_INTERVAL))


async def _run_events(
    state: AppState,
    templates: Jinja2Templates,
    run: Run,
    pods: str | None,
    cursor: int,
    base: float,
    phase: float,
) -> AsyncGenerator[ServerSentEvent, None]:
    while True:
        interval = run_interval(base, state.run_viewers[run.id])
        if run.finished:
            yield ServerSentEvent(raw_data=final_block(state, templates, run), event="done")
            return
        moment, ctx = live_context(state, run, pods, base)
        total = len(run.results)
        if cursor < min(total, STRIP_MAX):
            end = min(total, STRIP_MAX)
            html = live_strip(state, templates, run, ctx["colors"]).cells(
                cursor, end, functools.partial(strip_cells, templates, run, ctx["colors"])
            )
            cursor = end
            yield ServerSentEvent(raw_data=html, event="strip", id=str(cursor))
        render = functools.partial(fragment, templates, "partials/_probe_summary.html", **ctx)
        yield ServerSentEvent(raw_data=state.fragments.get(("summary", *moment), render), event="summary")
        await run.wait_changed()
        if not run.finished and cursor > 0:
            # Coalesce: at most one update per interval, but the first results go out at once (the
            # first bar on screen is what the user waits for after the click).
            await asyncio.sleep(until_slot(time.monotonic(), phase * interval, interval))
