"""Flip a watched Service's session affinity: a form on the Service page and the same as JSON.

Off unless ``SVCSCOPE_ALLOW_AFFINITY_PATCH`` (the chart sets it with ``rbac.patchServices``), and only where
``app.writepolicy`` allows a write (a namespace of ``SVCSCOPE_WRITABLE_NAMESPACES``, never the cluster's own
namespaces nor ``default/kubernetes``); the page says why the form is not offered. The form shows the
current value and needs an explicit confirmation (a required checkbox, checked here too, so it holds
without JavaScript). Each change is recorded: on the Service page (time, old -> new, the client address)
and as a Kubernetes Event on the Service. The values are checked by ``AffinityChange``; the write is
``KubeActions.patch_session_affinity``.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from app.domain import ObjectKey, Service
from app.kube.actions import (
    DEFAULT_AFFINITY_TIMEOUT_S,
    MAX_AFFINITY_TIMEOUT_S,
    ActionError,
    AffinityChange,
    RecordedChange,
    policy_from,
)
from app.state import AppState
from app.web.deps import StateDep, TemplatesDep
from app.web.errors import http_error
from app.web.params import NamePath, NamespacePath
from app.web.render import fragment, wants_fragment
from app.web.security import make_csrf_token
from app.writepolicy import Write

router = APIRouter()

DISABLED = (
    "changing session affinity from svcscope is off: start it with SVCSCOPE_ALLOW_AFFINITY_PATCH=true "
    "(the Helm chart does so with rbac.patchServices=true, which also grants the patch verb)"
)
CHANGES_KEPT = 20  # per Service, newest first on its page (the Events on the Service are the durable record)
CONFIRM = (
    "confirm the change: tick the box that says this changes the Service for every client "
    "(the Service is not changed without it)"
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


def refusal(state: AppState, namespace: str, name: str) -> str | None:
    """Why this Service's affinity may not be changed from here (the feature is on), or None."""
    decision = policy_from(state.settings).check(namespace, Write.SERVICE_PATCH, name)
    return None if decision else decision.reason


def panel_context(state: AppState, namespace: str, name: str) -> dict[str, Any]:
    """What ``partials/_affinity_form.html`` needs besides the Service (for the Service page)."""
    return {
        "affinity_patch": state.settings.allow_affinity_patch,
        "affinity_refusal": refusal(state, namespace, name) if state.settings.allow_affinity_patch else None,
        "affinity_changes": list(state.affinity_changes.get(ObjectKey(namespace, name), ())),
    }


def _value(affinity: str, timeout_s: int | None) -> str:
    if affinity == "ClientIP":
        return f"ClientIP ({timeout_s or DEFAULT_AFFINITY_TIMEOUT_S} s)"
    return affinity


async def apply_change(
    state: AppState,
    namespace: str,
    name: str,
    make: Callable[[], AffinityChange],
    *,
    client: str,
) -> tuple[Service, AffinityChange, str | None]:
    """Check, patch, record; every refusal is an HTTPException with a message (403, 404, 422, 502, 503).
    Returns the Service as it now is, the change and, if the Event could not be written, why."""
    if not state.settings.allow_affinity_patch:
        raise HTTPException(403, DISABLED)
    svc = state.cache.service(ObjectKey(namespace, name))
    if svc is None:
        raise HTTPException(404, f"Service {namespace}/{name} is not among the Services svcscope watches.")
    if reason := refusal(state, namespace, name):
        raise HTTPException(403, reason)
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
    old = _value(svc.session_affinity, svc.affinity_timeout_s)
    new = _value(change.affinity, change.timeout_s)
    if old == new:
        raise HTTPException(
            422, f"Service {namespace}/{name} already has sessionAffinity {old}: nothing to change"
        )
    actions = state.actions
    if actions is None:
        raise HTTPException(503, "no Kubernetes client for writes is running")
    try:
        await actions.patch_session_affinity(namespace, name, change)
    except ActionError as exc:
        raise http_error(exc) from exc
    record = RecordedChange(datetime.now(UTC), old, new, client)
    changes = state.affinity_changes.setdefault(ObjectKey(namespace, name), deque(maxlen=CHANGES_KEPT))
    changes.appendleft(record)
    not_recorded = None
    try:
        await actions.record_affinity_change(namespace, name, svc.uid, record)
    except ActionError as exc:
        not_recorded = exc.message
    timeout = (change.timeout_s or DEFAULT_AFFINITY_TIMEOUT_S) if change.affinity == "ClientIP" else None
    # What the apiserver now holds (it answered the patch); the watch delivers the same shortly.
    now = dataclasses.replace(svc, session_affinity=change.affinity, affinity_timeout_s=timeout)
    return now, change, not_recorded


def _client(request: Request) -> str:
    # Through kubectl port-forward every browser is 127.0.0.1: the address is what the dashboard saw.
    return request.client.host if request.client else "unknown"


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
    request: Request, namespace: NamespacePath, name: NamePath, body: AffinityRequest, state: StateDep
) -> AffinityPatched:
    """Patch the Service's ``spec.sessionAffinity`` (and ``sessionAffinityConfig``); needs the feature on
    and the Service's namespace writable. The change is recorded as an Event on the Service."""
    _, change, not_recorded = await apply_change(
        state,
        namespace,
        name,
        lambda: AffinityChange(body.session_affinity, body.timeout_s),
        client=_client(request),
    )
    unrecorded = f"; not recorded as an Event: {not_recorded}" if not_recorded else ""
    return AffinityPatched(
        namespace=namespace,
        name=name,
        session_affinity=change.affinity,
        timeout_s=change.timeout_s,
        note=f"patched: {_describe(change)}; {NEW_CONNECTIONS}{unrecorded}",
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
    confirm: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    """The Service page's form: htmx gets the refreshed panel with the result, a plain post a redirect."""
    htmx = wants_fragment(request)

    def change() -> AffinityChange:
        parsed = AffinityChange.parse(session_affinity, timeout_s)
        if confirm != "yes":
            raise ValueError(CONFIRM)
        return parsed

    try:
        svc, made, not_recorded = await apply_change(state, namespace, name, change, client=_client(request))
    except HTTPException as exc:
        if not htmx:
            raise
        # htmx does not swap 4xx answers: the message goes in place, the status in the fragment.
        current = state.cache.service(ObjectKey(namespace, name))
        html = _panel(templates, state, namespace, name, current, exc.status_code, str(exc.detail))
        return HTMLResponse(html, headers={"X-Affinity-Status": str(exc.status_code)})
    if not htmx:
        return RedirectResponse(f"/services/{namespace}/{name}", status_code=303)
    message = f"Patched: {_describe(made)}. {NEW_CONNECTIONS[0].upper()}{NEW_CONNECTIONS[1:]}."
    if not_recorded:
        message += f" The change was not recorded as an Event on the Service: {not_recorded}"
    return HTMLResponse(_panel(templates, state, namespace, name, svc, 200, message))


def _panel(
    templates: Any,
    state: AppState,
    namespace: str,
    name: str,
    service: Service | None,
    status: int,
    message: str,
) -> str:
    """The whole affinity panel (it replaces itself), with the result of the last submit in it."""
    if service is None:  # deleted meanwhile: only the message
        return fragment(templates, "partials/_affinity_result.html", status=status, message=message)
    return fragment(
        templates,
        "partials/_affinity_form.html",
        service=service,
        csrf_token=make_csrf_token(state.settings.csrf_secret),
        affinity_result={"status": status, "message": message},
        **panel_context(state, namespace, name),
    )
