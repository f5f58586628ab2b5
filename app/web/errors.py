"""Errors in one place: what HTTP status each domain error gets, and the handlers that answer with a
page or JSON (never a stack trace). The core raises plain exceptions; only this module knows HTTP."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.kube.actions import ActionError, Refusal
from app.probe.spec import RunLimitError, SpecError
from app.probe.targets import ForbiddenAddress, TargetError, UnknownService
from app.web.render import page

log = logging.getLogger(__name__)


# The most specific class first: a ForbiddenAddress is also a TargetError.
DOMAIN_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (UnknownService, 404),
    (ForbiddenAddress, 403),
    (TargetError, 422),
    (SpecError, 422),
    (RunLimitError, 429),
)
REFUSAL_STATUS = {
    Refusal.FORBIDDEN: 403,
    Refusal.NOT_FOUND: 404,
    Refusal.CONFLICT: 409,
    Refusal.INVALID: 422,
    Refusal.FAILED: 502,  # the apiserver gave no usable answer: a bad gateway, not our error
}
DOMAIN_ERRORS: tuple[type[Exception], ...] = (ActionError, *(cls for cls, _ in DOMAIN_STATUS))


def http_error(exc: Exception) -> StarletteHTTPException:
    """The HTTP answer to a domain error (for routes that render it in place, e.g. htmx forms)."""
    if isinstance(exc, StarletteHTTPException):
        return exc
    if isinstance(exc, ActionError):
        return StarletteHTTPException(REFUSAL_STATUS[exc.refusal], exc.message)
    for cls, status in DOMAIN_STATUS:
        if isinstance(exc, cls):
            return StarletteHTTPException(status, getattr(exc, "message", None) or str(exc))
    raise TypeError(f"not a domain error: {exc!r}")


def _wants_json(request: Request) -> bool:
    path = request.url.path
    if path.startswith(("/api/", "/streams/", "/readyz", "/healthz", "/metrics")):
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def _error(
    request: Request, status: int, message: str, errors: list[dict[str, Any]] | None = None
) -> Response:
    if _wants_json(request):
        body: dict[str, Any] = {"detail": message}
        if errors is not None:
            body["errors"] = errors
        return JSONResponse(body, status_code=status)
    return page(
        request, "pages/error.html", status_code=status, status=status, message=message, errors=errors or []
    )


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        out.append(
            {
                "parameter": ".".join(loc[1:]) or ".".join(loc),
                "in": loc[0] if loc else "",
                "message": err.get("msg", ""),
            }
        )
    return out


def install(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_exception(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404 and message == "Not Found":
            message = f"Nothing at {request.url.path}."
        return _error(request, exc.status_code, message)

    async def domain_error(request: Request, exc: Exception) -> Response:
        answer = http_error(exc)
        return _error(request, answer.status_code, str(answer.detail))

    for cls in DOMAIN_ERRORS:
        app.add_exception_handler(cls, domain_error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = _validation_errors(exc)
        text = "; ".join(f"{e['parameter']}: {e['message']}" for e in errors)
        return _error(request, 422, f"Invalid request: {text}", errors)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return _error(request, 500, "Internal error; details are in the server log.")
