"""Liveness, readiness (first lists synced) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.web.deps import StateDep

router = APIRouter(include_in_schema=False)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep) -> JSONResponse:
    cache = state.cache
    body = {
        "ready": cache.synced,
        "synced": cache.sync_state(),
        "problems": [
            {"resource": p.kind.value, "scope": p.scope or "*", "message": p.message}
            for p in cache.problems()
        ],
    }
    return JSONResponse(body, status_code=200 if cache.synced else 503)


@router.get("/metrics")
async def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)
