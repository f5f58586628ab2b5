"""The Service page's Recent runs table follows its runs live over SSE (no cluster).

Runs come from a probe pod whose client answers only when the test opens a gate, so each state
(started, progressed, finished) is reached on purpose, not by timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.config import Settings
from app.domain import Origin
from app.lifespan import begin_shutdown
from app.main import create_app
from app.probe.run import Run
from app.probe.runner import ProbeRunner
from app.probe.stats import Outcome
from app.state import AppState
from app.web.streams import runs_filter
from tests.unit.fakes import FakeRemote, limits, record_line
from tests.unit.kube.objects import demo_cache
from tests.unit.web.sse import call, events

pytestmark = pytest.mark.timeout(30)
STREAM = "/streams/services/shop/web/runs"


class GatedRemote(FakeRemote):
    """The echo client in a pod: answers its records once ``gate`` is set."""

    def __init__(self, lines: list[str]) -> None:
        self.opened = asyncio.Event()
        super().__init__(lines, gate=self.opened)


@pytest.fixture
def remote() -> GatedRemote:
    return GatedRemote([record_line(seq, "web-1") for seq in (1, 2, 3)])


@pytest.fixture
def client(remote: GatedRemote) -> Iterator[TestClient]:
    cache = demo_cache()
    app = create_app(Settings(csrf_secret="test", sse_coalesce_s=0.05), cache=cache, start_watchers=False)
    with TestClient(app, base_url="http://localhost") as c:
        runner = ProbeRunner(cache, limits(), remote=remote, origins=(Origin.PROBE_POD,))
        app.state.svc.probe_runner = runner
        yield c
        call(c, runner.aclose)


def app_state(client: TestClient) -> AppState:
    state: AppState = cast(FastAPI, client.app).state.svc
    return state


def runner_of(client: TestClient) -> ProbeRunner:
    runner = app_state(client).probe_runner
    assert runner is not None, "the lifespan starts the runner"
    return runner


def start(client: TestClient, count: int) -> str:
    body = {"namespace": "shop", "service": "web", "port": "http", "count": count, "concurrency": 1}
    r = client.post("/api/v1/probes", json={**body, "origin": "probe-pod"})
    assert r.status_code == 202, r.text
    run_id: str = r.json()["id"]
    return run_id


def test_table_follows_a_run_from_start_to_end(client: TestClient, remote: GatedRemote) -> None:
    with client.stream("GET", STREAM) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        ((event, html),) = events(lines, 1)
        assert event == "runs" and 'data-testid="runs-empty"' in html
        run_id = start(client, 3)
        ((event, html),) = events(lines, 1)
        assert event == "runs" and f'data-run="{run_id}"' in html
        assert '<span class="badge warn" data-testid="run-status">running</span>' in html and "0/3" in html
        call(client, remote.opened.set)
        ((event, html),) = events(lines, 1)
        assert "running" not in html and "3/3" in html and "1 pod: web-1 100%" in html
        assert "consistent with ClientIP affinity" in html
        call(client, app_state(client).hub.close)
        assert events(lines, 1) == []  # the stream ends


def add_results(run: Run, n: int) -> None:
    for seq in range(1, n + 1):
        run.add(Outcome(seq, "web-2", None, 1.0, seq))


def test_progress_is_coalesced_and_shutdown_ends_the_stream(client: TestClient) -> None:
    state = app_state(client)
    with client.stream("GET", STREAM) as r:
        lines = r.iter_lines()
        assert len(events(lines, 1)) == 1
        run_id = start(client, 100)
        ((_, html),) = events(lines, 1)
        assert "0/100" in html
        # 40 results in one go: one update, not 40.
        call(client, add_results, runner_of(client).get(run_id), 40)
        ((_, html),) = events(lines, 1)
        assert "40/100" in html and "running" in html
        assert state.hub.subscriber_count == 1
        call(client, begin_shutdown, state)  # what SIGTERM does: the hub closes, runs are cancelled
        assert events(lines, 5) == []
    assert state.hub.subscriber_count == 0


def test_service_page_connects_the_table_and_keeps_a_plain_refresh_link(client: TestClient) -> None:
    page = client.get("/services/shop/web").text
    assert f'sse-connect="{STREAM}"' in page and 'sse-swap="runs"' in page
    assert 'href="/services/shop/web#recent-runs" data-testid="runs-refresh"' in page
    run_id = start(client, 3)
    # Without JavaScript the link reloads the page, which lists the run.
    assert f'data-run="{run_id}"' in client.get("/services/shop/web").text
    # With htmx it swaps in the table fragment.
    fragment = client.get("/runs?namespace=shop&service=web", headers={"HX-Request": "true"}).text
    assert "<html" not in fragment and f'data-run="{run_id}"' in fragment


def test_only_runs_of_this_service_wake_its_table(client: TestClient) -> None:
    run = runner_of(client).get(start(client, 3))
    assert runs_filter("shop", "web")(run)
    assert not runs_filter("shop", "db")(run) and not runs_filter("other", "web")(run)
    assert not runs_filter("shop", "web")(object())  # cache changes are not run news
