"""ClientIP affinity over time on the real cluster, through the shipped artifact (the image, the chart's
ServiceAccount and RBAC, `kubectl port-forward`): with a 5 s timeout, a steady stream of one request per
second keeps kube-proxy's entry fresh and never re-picks, and a 7 s pause lets it expire so the next request
gets a fresh pick, which the run records with its timing.

A fresh pick may land on the same pod again by chance (1 in 3 here), so the test asserts the recorded fresh
pick (from the timing) and that no change of pod ever happened without one, not that the pod changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, EchoApp
from tests.e2e.dashboard import Dashboard, deployed, hits, probe_body
from tests.e2e.released import released_dashboard

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

TIMEOUT_S = 5
CLIENT_IP = f"""
sessionAffinity: ClientIP
sessionAffinityConfig:
  clientIP:
    timeoutSeconds: {TIMEOUT_S}
"""


@pytest.fixture
def dashboard(cluster: Cluster, namespace: str) -> Iterator[Dashboard]:
    with released_dashboard(cluster, namespace) as (_, dash):
        yield dash


def paced(dash: Dashboard, app: EchoApp, **kw: Any) -> dict[str, Any]:
    run = dash.probe(timeout=90, **probe_body(app, concurrency=1, **kw))
    assert run["status"] == "done" and run["errors"] == {}, (run["status"], run["errors"], run["error"])
    assert run["attributed"] == run["total"], run["unattributed"]
    return run


def test_a_steady_stream_never_repicks_and_a_pause_longer_than_the_timeout_picks_afresh(
    cluster: Cluster, dashboard: Dashboard, deploy_echo: Callable[..., EchoApp], namespace: str
) -> None:
    dash = dashboard
    app = deployed(deploy_echo, dash, namespace, service_spec=CLIENT_IP)

    # 1 request/s for 15 s: every gap (about 1 s) is shorter than the timeout, so the pin is refreshed.
    steady = paced(dash, app, count=16, interval_s=1.0)
    a = steady["affinity"]
    assert a["timeout_s"] == TIMEOUT_S and a["requests"] == 16
    assert a["fresh_picks"] == 0 and a["unexpected_changes"] == 0, a["lines"]
    assert 1.0 <= a["longest_gap_s"] < TIMEOUT_S
    assert len({p for p, n in hits(steady).items() if n}) == 1, hits(steady)
    assert "no re-pick was expected; none was observed" in a["lines"][0]
    assert steady["spec"]["interval_s"] == 1.0

    # A 7 s pause after each request: each next request is a fresh pick (the pod may repeat by chance).
    paused = paced(dash, app, count=3, pause_after=1, pause_s=7.0)
    a = paused["affinity"]
    assert [p["seq"] for p in a["fresh"]] == [2, 3], a
    assert all(p["gap_s"] > TIMEOUT_S for p in a["fresh"]), a["fresh"]
    assert a["unexpected_changes"] == 0, a["lines"]
    words = [line for line in a["lines"] if "fresh pick after the pause" in line]
    assert len(words) == 2 and all(w.startswith("pause 7.") for w in words), a["lines"]
    moved = [p for p in a["fresh"] if p["changed"]]
    answered = {p for p, n in hits(paused).items() if n}
    assert len(answered) == len({p["pod"] for p in a["picks"]}) <= 1 + len(moved)
    if paused["routing"] is not None:  # the dashboard's node is known through the chart's NODE_NAME
        assert paused["routing"]["as_expected"], paused["routing"]["verdict"]

    page = dash.http.get(f"/runs/{paused['id']}").text
    assert 'data-testid="affinity-time"' in page and "fresh pick after the pause" in page

    # The comparison shows each run's expected-versus-observed verdict.
    compare = dash.http.get(f"/runs/compare?ids={steady['id']},{paused['id']}").text
    assert compare.count('data-testid="compare-routing"') == 2

    # A watch shows the same verdict for its rolling window: one pinned client, one pod.
    r = dash.http.post("/api/v1/watches", json={**probe_body(app), "rate": 5, "duration_s": 3, "window_s": 3})
    assert r.status_code == 202, r.text
    watch_id = r.json()["id"]
    done: dict[str, Any] = {}

    def finished() -> bool:
        done.update(dash.http.get(f"/api/v1/watches/{watch_id}").json())
        return done["status"] not in ("starting", "running")

    cluster.wait_for(finished, 60, "the watch to end")
    assert done["routing"] is not None and done["routing"]["as_expected"], done["routing"]
    assert 'data-testid="watch-routing"' in dash.http.get(f"/watches/{watch_id}").text
