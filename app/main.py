"""Application factory: ``uvicorn --factory app.main:create_app``. No work happens at import time."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.templating import Jinja2Templates

from app.config import Settings, get_settings
from app.kube.cache import ServiceCache
from app.kube.watch import EventSource
from app.lifespan import build_state, lifespan
from app.web import affinity, api, assets, compare, errors, health, pages, probes, streams, watches
from app.web.render import human_age
from app.web.security import HostPolicy, SecurityMiddleware

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"


def create_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    templates.env.globals["htmx_js"] = "/static/htmx-2.0.11.min.js"
    templates.env.globals["htmx_sse_js"] = "/static/htmx-ext-sse-2.2.4.js"
    templates.env.filters["age"] = human_age
    return templates


def create_app(
    settings: Settings | None = None,
    *,
    cache: ServiceCache | None = None,
    start_watchers: bool = True,
    source: EventSource | None = None,
) -> FastAPI:
    """Build the app. Tests pass ``cache`` (pre-filled) and ``start_watchers=False``, or a fake ``source``."""
    settings = settings or get_settings()
    app = FastAPI(
        title="svcscope",
        version="0.1.0",
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.templates = create_templates()
    app.state.svc = build_state(settings, cache=cache, start_watchers=start_watchers, source=source)
    app.add_middleware(
        SecurityMiddleware, hosts=HostPolicy(settings.allowed_hosts), csrf_secret=settings.csrf_secret
    )
    assets.install(app, STATIC_DIR)  # /static (cached, compressed) and /api/docs without a CDN
    errors.install(app)
    app.include_router(health.router)
    app.include_router(api.router)
    app.include_router(streams.router)
    app.include_router(pages.router)
    app.include_router(compare.router)  # before probes, whose /runs/{run_id} would match /runs/compare
    app.include_router(probes.router)
    app.include_router(affinity.router)
    app.include_router(watches.router)
    return app
