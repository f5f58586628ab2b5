"""Run pages for a first-time user: the answer to a click already shows bars, a running run's page
reloads itself without JavaScript (and stops once it ended), and each strip cell names its request."""

from __future__ import annotations

import asyncio
import re

import httpx

from app.web.security import make_csrf_token
from tests.unit.fakes import Cluster
from tests.unit.web import test_probes as probes_suite
from tests.unit.web.test_probes import BODY, SECRET, wait_done

client = probes_suite.client  # a runner over fake pods (the same fixture as the probe route tests)

REFRESH = '<meta http-equiv="refresh"'


async def test_the_answer_to_a_click_already_shows_bars(client: tuple[httpx.AsyncClient, Cluster]) -> None:
    c, _ = client
    token = make_csrf_token(SECRET)
    form = {**{k: str(v) for k, v in BODY.items()}, "csrf_token": token, "count": "2000", "concurrency": "1"}
    r = await c.post("/probes", data=form, headers={"HX-Request": "true", "X-CSRF-Token": token})
    assert r.status_code == 202
    done = re.search(r'class="probe-summary" data-status="running" data-done="(\d+)"', r.text)
    assert done and int(done.group(1)) > 0, r.text[:500]  # results, not an empty frame
    run_id = re.search(r'data-run="([0-9a-f]{12})"', r.text)
    assert run_id
    await c.post(f"/api/v1/probes/{run_id.group(1)}/cancel", json={})


async def test_a_running_run_page_reloads_without_javascript(
    client: tuple[httpx.AsyncClient, Cluster],
) -> None:
    c, _ = client
    run_id = (await c.post("/api/v1/probes", json={**BODY, "count": 10_000, "concurrency": 1})).json()["id"]
    page = (await c.get(f"/runs/{run_id}")).text
    assert f"<noscript>{REFRESH}" in page
    for _ in range(400):  # bounded: until some requests were answered
        if (await c.get(f"/api/v1/probes/{run_id}")).json()["done"] > 0:
            break
        await asyncio.sleep(0.01)
    await c.post(f"/api/v1/probes/{run_id}/cancel", json={})
    await wait_done(c, run_id)
    finished = (await c.get(f"/runs/{run_id}")).text
    assert REFRESH not in finished
    cells = re.findall(
        r'<i class="cell [^"]*" tabindex="-1" role="img" title="#\d+ [^"]+" aria-label="request \d+: ',
        finished,
    )
    assert cells, "strip cells name their request"
    assert 'class="strip"' in finished and 'tabindex="0"' in finished
