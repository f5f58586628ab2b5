"""Property-based fuzz of the JSON API from its own OpenAPI schema (schemathesis + hypothesis).

Every operation under /api gets valid and invalid requests (bodies, path and query parameters); the app
must never answer 5xx, nor show a traceback. The app runs with a pre-filled cache (no cluster) and its
probe runner dials a closed loopback port instead of the cluster's addresses, so started runs end at once
without sending a packet anywhere. Bounded: a fixed example count per operation, derandomized.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from starlette.types import Receive, Scope, Send

from app.config import Settings
from app.main import create_app
from app.probe.runner import ProbeRunner
from tests.unit.fakes import limits
from tests.unit.kube.objects import demo_cache

EXAMPLES = 15

CACHE = demo_cache()
APP = create_app(
    Settings(
        csrf_secret="fuzz",
        allowed_hosts=["testserver"],  # the Host the schemathesis client sends
        probe_max_count=20,
        probe_max_timeout_s=0.5,
        probe_max_runs_per_minute=100_000,
    ),
    cache=CACHE,
    start_watchers=False,
)


def closed_port(host: str, port: int) -> tuple[str, int]:
    return ("127.0.0.1", 1)


class FuzzedApp:
    """The app, whose probe runner is swapped (once, after start-up) for one that never leaves loopback."""

    def __init__(self) -> None:
        self.swapped = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = APP.state.svc
        if scope["type"] == "http" and not self.swapped and state.probe_runner is not None:
            self.swapped = True
            bounds = limits(max_count=20, max_timeout_s=0.5, per_minute=100_000)
            state.probe_runner = ProbeRunner(CACHE, bounds, dial=closed_port)
            state.closers.append(state.probe_runner.aclose)
        await APP(scope, receive, send)


schema = schemathesis.openapi.from_asgi("/api/openapi.json", FuzzedApp())

pytestmark = pytest.mark.timeout(120)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_never_answers_5xx(case: Any) -> None:
    response = case.call()
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code}"
    text = response.text
    assert "Traceback" not in text and 'File "' not in text, text[:500]
