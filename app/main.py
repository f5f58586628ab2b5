"""Application factory: ``uvicorn --factory app.main:create_app``. No work happens at import time."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from app.config import Settings, get_settings
from app.web.security import HostPolicy, SecurityMiddleware

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"


def create_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    templates.env.globals["htmx_js"] = "/static/htmx-2.0.11.min.js"
    templates.env.globals["htmx_sse_js"] = "/static/htmx-ext-sse-2.2.4.js"
    return templates


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(title="svcscope", version="0.1.0", docs_url="/api/docs", openapi_url="/api/openapi.json")
    app.state.settings = settings
    app.state.templates = create_templates()
    app.add_middleware(
        SecurityMiddleware, hosts=HostPolicy(settings.allowed_hosts), csrf_secret=settings.csrf_secret
    )
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
