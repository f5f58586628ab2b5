"""No request waits for FastAPI's thread pool on the way to its handler.

FastAPI calls a plain ``def`` dependency or handler in a worker thread. Each such hop waits for a thread
and then for the event loop again: on a loop kept busy by probe runs, a page with four plain dependencies
waited for eight extra turns of the loop. The dashboard's own dependencies and handlers are all
``async def`` (none of them blocks); reads from the run store go to a thread explicitly, where they belong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fastapi.dependencies.utils
import fastapi.routing
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.unit.kube.objects import demo_cache


def test_pages_and_the_api_reach_their_handlers_without_the_thread_pool(monkeypatch: pytest.MonkeyPatch):
    hopped: list[str] = []

    def counting(original: Callable[..., Any]) -> Callable[..., Any]:
        async def run_in_threadpool(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            module = getattr(func, "__module__", "") or ""
            if module.startswith("app."):
                hopped.append(f"{module}.{func.__qualname__}")
            return await original(func, *args, **kwargs)

        return run_in_threadpool

    for module in (fastapi.dependencies.utils, fastapi.routing):
        monkeypatch.setattr(module, "run_in_threadpool", counting(module.run_in_threadpool))
    cache = demo_cache()
    service = next(iter(cache.services()))
    app = create_app(Settings(csrf_secret="t"), cache=cache, start_watchers=False)
    paths = [
        "/",
        "/?type=all&sort=name",
        f"/services/{service.key.namespace}/{service.key.name}",
        "/api/v1/services",
        f"/api/v1/services/{service.key.namespace}/{service.key.name}",
        "/runs",
        "/healthz",
    ]
    with TestClient(app, base_url="http://localhost") as client:
        for path in paths:
            r = client.get(path)
            assert r.status_code == 200, (path, r.text[:200])
    assert hopped == [], f"plain def, called in FastAPI's thread pool: {sorted(set(hopped))}"
