"""Liveness, readiness (first lists synced) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from app.web.api import ProblemOut
from app.web.deps import StateDep

router = APIRouter(include_in_schema=False)


class HealthOut(BaseModel):
    status: str = "ok"


class ReadyOut(BaseModel):
    ready: bool
    synced: dict[str, dict[str, bool]] = Field(description="per resource, per watched namespace (* = all)")
    problems: list[ProblemOut]


@router.get("/healthz", response_model=HealthOut)
async def healthz() -> HealthOut:
    return HealthOut()


@router.get("/readyz", response_model=ReadyOut)
async def readyz(state: StateDep, response: Response) -> ReadyOut:
    """503 until the first lists of every watched resource are in."""
    cache = state.cache
    response.status_code = 200 if cache.synced else 503
    return ReadyOut(
        ready=cache.synced, synced=cache.sync_state(), problems=[ProblemOut.of(p) for p in cache.problems()]
    )


@router.get("/metrics")
async def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)
