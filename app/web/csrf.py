"""``GET /api/v1/csrf``: a fresh CSRF token for the page's script, so that a stale page renews its token.

The contract (the page's script relies on it): the answer is ``200`` JSON
``{"token", "header": "X-CSRF-Token", "field": "csrf_token", "max_age_s"}``, never cached; the token is
bound to the browser's CSRF cookie, which the answer sets (HttpOnly, SameSite=Strict, Path=/) when the
request came without one, and keeps otherwise (tokens already in other tabs stay valid). A refused
unsafe request answers ``403`` with ``{"detail", "csrf": "missing" | "no-cookie" | "invalid" | "expired",
"renew": "/api/v1/csrf"}`` and the header ``X-CSRF-Error``: fetch a token here, then send it again.
A cross-site page cannot read this answer (no CORS), and a rebinding page is refused by the Host check.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from app.web.deps import SettingsDep
from app.web.security import CSRF_FIELD, csrf_token

router = APIRouter(prefix="/api/v1", tags=["session"])


class CsrfOut(BaseModel):
    token: str = Field(description="send it as the X-CSRF-Token header or the csrf_token form field")
    header: str = "X-CSRF-Token"
    field: str = CSRF_FIELD
    max_age_s: float = Field(description="the token is refused (403, csrf=expired) after this many seconds")


@router.get("/csrf", response_model=CsrfOut, summary="A fresh CSRF token (and the cookie it is bound to)")
async def get_csrf(request: Request, response: Response, settings: SettingsDep) -> CsrfOut:
    response.headers["cache-control"] = "no-store"
    return CsrfOut(token=csrf_token(request), max_age_s=settings.csrf_max_age_s)
