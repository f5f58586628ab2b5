"""Application factory: ``uvicorn --factory app.main:create_app``. No work happens at import time."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.templating import Jinja2Templates
from prometheus_client import Gauge, PlatformCollector, ProcessCollector
from starlette.types import ASGIApp

from app.config import Settings, get_settings
from app.kube.cache import ServiceCache
from app.kube.watch import EventSource
from app.lifespan import build_state, lifespan
from app.web import (
    affinity,
    api,
    assets,
    checks,
    compare,
    csrf,
    errors,
    health,
    pages,
    probes,
    streams,
    watches,
)
from app.web import fanout as fanouts
from app.web.limits import LimitsMiddleware, RequestLimits, StreamLimitMiddleware, StreamSlots
from app.web.render import human_age
from app.web.security import Csrf, HeadersMiddleware, HostPolicy, SecurityMiddleware

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"


def create_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    # The templates ship with the code and never change under a running process: no file check per render
    # (a watch draws a column and its panels every second, each with its includes).
    templates.env.auto_reload = False
    templates.env.globals["htmx_js"] = "/static/htmx-2.0.11.min.js"
    templates.env.globals["htmx_sse_js"] = "/static/htmx-ext-sse-2.2.4.js"
    templates.env.filters["age"] = human_age
    return templates


class Dashboard(FastAPI):
    """FastAPI whose outermost layer adds the browser hardening headers: outside Starlette's
    ServerErrorMiddleware, so that even its 500 answers carry them."""

    def build_middleware_stack(self) -> ASGIApp:
        return HeadersMiddleware(super().build_middleware_stack())


def create_app(
    settings: Settings | None = None,
    *,
    cache: ServiceCache | None = None,
    start_watchers: bool = True,
    source: EventSource | None = None,
) -> FastAPI:
    """Build the app. Tests pass ``cache`` (pre-filled) and ``start_watchers=False``, or a fake ``source``."""
    settings = settings or get_settings()
    app = Dashboard(
        title="svcscope",
        version="0.1.0",
        docs_url="/api/docs",  # served by app.web.assets from local files, without inline script
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.templates = create_templates()
    app.state.svc = state = build_state(settings, cache=cache, start_watchers=start_watchers, source=source)
    streams_open = StreamSlots(settings.sse_max_streams, settings.sse_max_streams_per_client)
    app.state.streams = streams_open
    sse = Gauge(
        "svcscope_sse_clients", "Open Server-Sent Event streams (every kind)", registry=state.registry
    )
    sse.set_function(lambda: streams_open.open)
    # process_resident_memory_bytes, process_cpu_seconds_total, process_open_fds, … and python_info.
    ProcessCollector(registry=state.registry)
    PlatformCollector(registry=state.registry)
    # The last added runs first: request bounds, then Host / Origin / CSRF, then the stream slots.
    app.add_middleware(StreamLimitMiddleware, slots=streams_open)
    app.add_middleware(
        SecurityMiddleware,
        hosts=HostPolicy(settings.allowed_hosts),
        csrf=Csrf(settings.csrf_secret, settings.csrf_max_age_s),
        max_form_bytes=settings.max_body_bytes,
    )
    app.add_middleware(
        LimitsMiddleware,
        limits=RequestLimits(settings.max_body_bytes, settings.max_url_bytes, settings.max_header_bytes),
    )
    assets.install(app, STATIC_DIR)  # /static (cached, compressed) and /api/docs without a CDN
    errors.install(app)
    app.include_router(health.router)
    app.include_router(api.router)
    app.include_router(csrf.router)
    app.include_router(streams.router)
    app.include_router(pages.router)
    app.include_router(compare.router)  # before probes, whose /runs/{run_id} would match /runs/compare
    app.include_router(probes.router)
    app.include_router(fanouts.router)
    app.include_router(affinity.router)
    app.include_router(checks.router)
    app.include_router(watches.router)
    return app
