"""Flip a watched Service's session affinity: a form on the Service page and the same as JSON.

Off unless ``SVCSCOPE_ALLOW_AFFINITY_PATCH`` (the chart sets it with ``rbac.patchServices``). Thin:
the values are checked by ``AffinityChange``, the write is ``KubeActions.patch_session_affinity``, and
the page learns the new affinity from the watch like any other change — nothing is read back here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from app.domain import ObjectKey
from app.kube.actions import MAX_AFFINITY_TIMEOUT_S, ActionError, AffinityChange
from app.state import AppState
from app.web.deps import StateDep, TemplatesDep
from app.web.errors import http_error
from app.web.params import NamePath, NamespacePath
from app.web.render import fragment, wants_fragment

router = APIRouter()

DISABLED = (
    "changing session affinity from svcscope is off: start it with SVCSCOPE_ALLOW_AFFINITY_PATCH=true "
    "(the Helm chart does so with rbac.patchServices=true, which also grants the patch verb)"
)
NEW_CONNECTIONS = (
    "kube-proxy applies it to new connections only (open ones keep their pod), once it has synced its "
    "rules; the page shows the new value when the watch delivers it"
)


class AffinityRequest(BaseModel):
    """The new session affinity; ``timeout_s`` (ClientIP only) defaults to the API's 10800 s."""

    model_config = ConfigDict(extra="forbid")

    session_affinity: Literal["None", "ClientIP"]
    timeout_s: int | None = Field(None, ge=1, le=MAX_AFFINITY_TIMEOUT_S)


class AffinityPatched(BaseModel):
    namespace: str
    name: str
    session_affinity: str
    timeout_s: int | None
    note: str


async def apply_change(
    state: AppState, namespace: str, name: str, make: Callable[[], AffinityChange]
) -> AffinityChange:
    """Check, then patch; every refusal is an HTTPException with a message (403, 404, 422, 502, 503)."""
    if not state.settings.allow_affinity_patch:
        raise HTTPException(403, DISABLED)
    svc = state.cache.service(ObjectKey(namespace, name))
    if svc is None:
        raise HTTPException(404, f"Service {namespace}/{name} is not among the Services svcscope watches.")
    if not svc.has_virtual_ip:
        raise HTTPException(
            422,
            f"Service {namespace}/{name} has no virtual IP: kube-proxy does not route it, so "
            "session affinity has no effect",
        )
    try:
        change = make()
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    actions = state.actions
    if actions is None:
        raise HTTPException(503, "no Kubernetes client for writes is running")
    try:
        await actions.patch_session_affinity(namespace, name, change)
    except ActionError as exc:
        raise http_error(exc) from exc
    return change


def _describe(change: AffinityChange) -> str:
    if change.affinity == "ClientIP":
        return f"sessionAffinity ClientIP, timeout {change.timeout_s or 10_800} s"
    return "sessionAffinity None"


@router.post(
    "/api/v1/services/{namespace}/{name}/session-affinity",
    tags=["services"],
    response_model=AffinityPatched,
    responses={403: {"description": "the feature is off"}, 404: {"description": "not a watched Service"}},
)
async def patch_affinity_api(
    namespace: NamespacePath, name: NamePath, body: AffinityRequest, state: StateDep
) -> AffinityPatched:
    """Patch the Service's ``spec.sessionAffinity`` (and ``sessionAffinityConfig``); needs the feature on."""
    change = await apply_change(
        state, namespace, name, lambda: AffinityChange(body.session_affinity, body.timeout_s)
    )
    return AffinityPatched(
        namespace=namespace,
        name=name,
        session_affinity=change.affinity,
        timeout_s=change.timeout_s,
        note=f"patched: {_describe(change)}; {NEW_CONNECTIONS}",
    )


@router.post("/services/{namespace}/{name}/session-affinity", include_in_schema=False, response_model=None)
async def patch_affinity_form(
    request: Request,
    namespace: NamespacePath,
    name: NamePath,
    session_affinity: Annotated[str, Form(max_length=16)],
    state: StateDep,
    templates: TemplatesDep,
    timeout_s: Annotated[str, Form(max_length=16)] = "",
) -> Response:
    """The Service page's form: htmx gets a one-line result in place, a plain post a redirect."""
    htmx = wants_fragment(request)
    try:
        change = await apply_change(
            state, namespace, name, lambda: AffinityChange.parse(session_affinity, timeout_s)
        )
    except HTTPException as exc:
        if not htmx:
            raise
        # htmx does not swap 4xx answers: the message goes in place, the status in the fragment.
        html = fragment(
            templates, "partials/_affinity_result.html", status=exc.status_code, message=exc.detail
        )
        return HTMLResponse(html, headers={"X-Affinity-Status": str(exc.status_code)})
    if htmx:
        message = f"Patched: {_describe(change)}. {NEW_CONNECTIONS[0].upper()}{NEW_CONNECTIONS[1:]}."
        return HTMLResponse(
            fragment(templates, "partials/_affinity_result.html", status=200, message=message)
        )
    return RedirectResponse(f"/services/{namespace}/{name}", status_code=303)
