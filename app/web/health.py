"""Liveness, readiness (first lists synced; stale watches named), the staleness banner and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from app.kube.freshness import report
from app.web.api import ProblemOut
from app.web.deps import StateDep
from app.web.render import fragment

router = APIRouter(include_in_schema=False)


class HealthOut(BaseModel):
    status: str = "ok"


class StaleOut(BaseModel):
    resource: str
    scope: str = Field(description="the watched namespace, * for all")
    age_s: float = Field(description="seconds since the watch was last known current")
    why: str | None


class ReadyOut(BaseModel):
    ready: bool
    synced: dict[str, dict[str, bool]] = Field(description="per resource, per watched namespace (* = all)")
    problems: list[ProblemOut]
    current: bool = Field(description="false before the first lists and while some watch is stale")
    stale: list[StaleOut] = Field(default_factory=list)
    reason: str | None = Field(default=None, description="why the data may be out of date")


@router.get("/healthz", response_model=HealthOut)
async def healthz() -> HealthOut:
    return HealthOut()


@router.get("/readyz", response_model=ReadyOut)
async def readyz(state: StateDep, response: Response, fresh: bool = False) -> ReadyOut:
    """503 until the first lists of every watched resource are in; stale watches are named in the body.

    Staleness does not fail readiness unless asked (``?fresh=true``): the dashboard is one pod,
    reached by a port-forward to that pod, and it still serves what it has, with a banner saying how
    old it is. Taking it out of its Service's endpoints while the apiserver is unreachable would help
    no one (there is no fresher replica, and the endpoint change itself needs that apiserver).
    A monitor that wants "current or failing" asks with ``?fresh=true``.
    """
    cache = state.cache
    freshness = report(state.watchers)
    stale = [
        StaleOut(resource=w.resource, scope=w.scope or "*", age_s=w.age_s or 0.0, why=w.why)
        for w in freshness.stale
    ]
    ok = cache.synced and not (fresh and stale)
    response.status_code = 200 if ok else 503
    return ReadyOut(
        ready=cache.synced,
        synced=cache.sync_state(),
        problems=[ProblemOut.of(p) for p in cache.problems()],
        current=cache.synced and not stale,  # nothing listed yet is not current either
        stale=stale,
        reason=freshness.message or None,
    )


@router.get("/status/freshness", response_class=HTMLResponse)
async def freshness_banner(request: Request, state: StateDep) -> HTMLResponse:
    """The staleness banner alone: every page polls it (see partials/_freshness.html)."""
    html = fragment(request.app.state.templates, "partials/_freshness.html", freshness=report(state.watchers))
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@router.get("/metrics")
async def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)
