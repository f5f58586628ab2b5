"""Ping vs TCP vs DNS from an origin, on the Service page (a form, htmx) and as JSON.

Thin: the checks and their reasons are ``app.probe.checks``; the DNS names are the Service page's own
(``app.catalog.reach``). The origins are the probe runner's (the same enabled set, the same write policy:
what the probe form would refuse, this refuses with the same words). Each POST starts one bounded check run;
their number per minute is the probe runs' limit.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from app.catalog.reach import reach
from app.domain import SUBDOMAIN_MAX, ObjectKey, Origin, Service
from app.probe import checks
from app.probe.remote import RemoteFailed
from app.probe.spec import ProbeSpec, SpecError
from app.state import AppState
from app.web.deps import StateDep, TemplatesDep
from app.web.errors import DOMAIN_ERRORS, http_error
from app.web.params import Name, NamePath, NamespacePath, PodName
from app.web.render import fragment

router = APIRouter()
SHOWN_IN_PLACE: tuple[type[Exception], ...] = (HTTPException, *DOMAIN_ERRORS)


class CheckRequest(BaseModel):
    """Where to run the checks from; ``port`` picks the Service port for the TCP check (default: first)."""

    model_config = ConfigDict(extra="forbid")

    origin: Origin = Origin.DASHBOARD
    port: Name | int | None = None
    exec_pod: PodName | None = Field(None, description="origin exec: the pod (it needs python3)")
    exec_namespace: Name | None = Field(
        None, description="origin exec: the pod's namespace (default: the Service's)"
    )
    exec_container: Name | None = None
    node: PodName | None = Field(None, description="origins probe-pod and node: the node to run on")


class CheckForm(CheckRequest):
    model_config = ConfigDict(extra="ignore")  # csrf_token travels in the same form
    port: str | None = Field(None, max_length=63)
    exec_pod: str | None = Field(None, max_length=SUBDOMAIN_MAX)
    exec_namespace: str | None = Field(None, max_length=SUBDOMAIN_MAX)
    exec_container: str | None = Field(None, max_length=SUBDOMAIN_MAX)
    node: str | None = Field(None, max_length=SUBDOMAIN_MAX)


class CheckOut(BaseModel):
    kind: str = Field(description="ping, tcp or dns")
    target: str
    result: str
    ok: bool | None = Field(description="what a working Service gives (None: not judged, e.g. no NET_RAW)")
    reason: str
    addresses: list[str]
    ms: float | None


class ChecksOut(BaseModel):
    service: str
    origin: str
    where: str
    checks: list[CheckOut]


def _service(state: AppState, namespace: str, name: str) -> Service:
    svc = state.cache.service(ObjectKey(namespace, name))
    if svc is None:
        raise HTTPException(404, f"Service {namespace}/{name} is not among the Services svcscope watches.")
    if svc.type.value == "ExternalName":
        raise HTTPException(
            422, f"Service {namespace}/{name} is an ExternalName (a DNS alias): nothing to check"
        )
    return svc


def _port(svc: Service, port: str | int | None) -> int | None:
    if not svc.ports or svc.headless:
        return None
    if port is None or str(port).strip() == "":
        return svc.ports[0].port
    for p in svc.ports:
        if str(port) in (p.name, str(p.port)):
            return p.port
    raise HTTPException(422, f"Service {svc.key} has no port {str(port)[:63]!r}")


def _plan(state: AppState, svc: Service, port: int | None) -> checks.Plan:
    pod_ips = {
        address
        for sl in state.cache.slices_for(svc.key)
        for ep in sl.endpoints
        if ep.conditions.effective_ready
        for address in ep.addresses
    }
    names = reach(svc, state.settings.cluster_domain).dns_names
    # svc, svc.ns and the fully qualified name: the three a user types (svc.ns.svc adds nothing new).
    picked = [names[0], names[1], names[-1]]
    ip = svc.cluster_ip if svc.has_virtual_ip else None
    return checks.plan(
        namespace=svc.key.namespace,
        name=svc.key.name,
        cluster_ip=ip,
        port=port,
        dns_names=picked,
        pod_ips=pod_ips,
    )


def _clean(value: str | None) -> str | None:
    return (value or "").strip() or None


async def run_checks(state: AppState, namespace: str, name: str, body: CheckRequest) -> ChecksOut:
    """Check, admit, run; refusals are HTTP errors with a message (403, 404, 422, 429, 502, 503)."""
    svc = _service(state, namespace, name)
    port = _port(svc, body.port)
    runner = state.probe_runner
    if runner is None:
        raise HTTPException(503, "the probe runner is not running")
    # The names go through the probe spec's own checks (the same rules and messages as a probe run).
    spec = ProbeSpec(
        namespace,
        name,
        "",
        origin=body.origin,
        exec_pod=_clean(body.exec_pod),
        exec_namespace=_clean(body.exec_namespace),
        exec_container=_clean(body.exec_container),
        node=_clean(body.node),
        concurrency=1,
    ).validated(runner.limits)
    if spec.origin not in runner.origins:
        enabled = ", ".join(o.value for o in runner.origins)
        raise SpecError(f"origin {spec.origin.value!r} is not enabled (enabled: {enabled})")
    if reason := checks.origin_refusal(runner.remote, spec.origin, spec.exec_in, spec.exec_pod or ""):
        raise HTTPException(403, reason)
    if spec.origin is Origin.EXEC:
        pod = state.cache.pod(ObjectKey(spec.exec_in, spec.exec_pod or ""))
        if pod is None or pod.phase != "Running":
            raise SpecError(f"pod {spec.exec_in}/{spec.exec_pod} is not a watched running pod")
    state.check_limiter.admit(runner.limits.per_minute)
    plan = _plan(state, svc, port)
    settings = state.settings
    if spec.origin is Origin.DASHBOARD:
        where = f"the dashboard's pod {settings.pod_name or ''}".strip()
        found = await checks.run_local(plan, settings.pod_namespace)
    else:
        assert runner.remote is not None  # origin_refusal refuses remote origins without one
        in_ns = settings.probe_pod_namespace
        where = {
            Origin.PROBE_POD: f"a probe pod in {in_ns}",
            Origin.NODE: f"a hostNetwork probe pod in {in_ns} (the node's network)",
        }.get(spec.origin, f"exec into {spec.exec_in}/{spec.exec_pod}")
        if spec.node and spec.origin is not Origin.EXEC:
            where += f" on node {spec.node}"
        origin_ns = spec.exec_in if spec.origin is Origin.EXEC else in_ns
        try:
            found = await checks.run_remote(
                plan,
                runner.remote,
                spec.origin,
                origin_namespace=origin_ns,
                node=spec.node,
                exec_namespace=spec.exec_in,
                exec_pod=spec.exec_pod,
                exec_container=spec.exec_container,
            )
        except RemoteFailed as exc:
            raise HTTPException(502, exc.message) from exc
    out = [
        CheckOut(
            kind=c.kind,
            target=c.target,
            result=c.result,
            ok=c.ok,
            reason=c.reason,
            addresses=list(c.addresses),
            ms=c.ms,
        )
        for c in found
    ]
    return ChecksOut(service=f"{namespace}/{name}", origin=spec.origin.value, where=where, checks=out)


@router.post("/api/v1/services/{namespace}/{name}/checks", tags=["services"], response_model=ChecksOut)
async def checks_api(
    namespace: NamespacePath, name: NamePath, body: CheckRequest, state: StateDep
) -> ChecksOut:
    """Ping the ClusterIP, connect to ClusterIP:port and resolve the Service's DNS names from an origin;
    each check with its result and the reason."""
    return await run_checks(state, namespace, name, body)


@router.post("/services/{namespace}/{name}/checks", include_in_schema=False, response_model=None)
async def checks_form(
    request: Request,
    namespace: NamespacePath,
    name: NamePath,
    form: Annotated[CheckForm, Form()],
    state: StateDep,
    templates: TemplatesDep,
) -> Response:
    """The Service page's form: the results as a fragment (a refusal in place too: htmx swaps only 2xx)."""
    try:
        result = await run_checks(state, namespace, name, form)
    except SHOWN_IN_PLACE as caught:
        exc = http_error(caught)
        html = fragment(
            templates, "partials/_checks_result.html", result=None, status=exc.status_code, message=exc.detail
        )
        return HTMLResponse(html, headers={"X-Checks-Status": str(exc.status_code)})
    return HTMLResponse(
        fragment(templates, "partials/_checks_result.html", result=result, status=200, message="")
    )
