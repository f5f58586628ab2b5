"""Rendering helpers shared by pages, partials and streams."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from app.kube.freshness import report
from app.web.security import csrf_token


def wants_fragment(request: Request) -> bool:
    """An htmx request that swaps a part of the page (a boosted request wants the whole page)."""
    return request.headers.get("hx-request") == "true" and request.headers.get("hx-boosted") != "true"


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    templates: Jinja2Templates = request.app.state.templates
    if "csrf_token" not in context:
        context["csrf_token"] = csrf_token(request)
    context.setdefault("freshness", report(request.app.state.svc.watchers))  # the staleness banner
    return templates.TemplateResponse(request, template, context, status_code=status_code)


def fragment(templates: Jinja2Templates, template: str, **context: Any) -> str:
    """A partial rendered to a string (for htmx responses and SSE events)."""
    return templates.get_template(template).render(**context)


def human_age(created: datetime | None, now: datetime | None = None) -> str:
    """The ``age`` template filter: 45s, 3m, 5h, 2d (like kubectl)."""
    if created is None:
        return "?"
    now = now or datetime.now(UTC)
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    seconds = max(0, int((now - created).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * 2 or (unit == "m" and seconds >= 60):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
