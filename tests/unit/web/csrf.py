"""CSRF tokens for tests: fetched the way the page's script does (``GET /api/v1/csrf``), so the client's
cookie jar holds the cookie each token is bound to."""

from __future__ import annotations

import httpx
from starlette.testclient import TestClient


def token(client: TestClient) -> str:
    r = client.get("/api/v1/csrf")
    assert r.status_code == 200, r.text
    value: str = r.json()["token"]
    return value


async def atoken(client: httpx.AsyncClient) -> str:
    r = await client.get("/api/v1/csrf")
    assert r.status_code == 200, r.text
    value: str = r.json()["token"]
    return value
