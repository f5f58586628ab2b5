"""Flip a Service's session affinity from the dashboard and watch kube-proxy follow (real cluster).

The dashboard is the chart installed into the test's namespace with rbac.patchServices and that namespace
writable (its own ServiceAccount may patch Services there and nowhere else), reached through
``kubectl port-forward``; the flip goes through its POST, the new value comes back through its watch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, EchoApp
from tests.e2e.dashboard import Dashboard, deployed, hits, probe_body
from tests.e2e.released import released_dashboard

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture
def affinity_dashboard(cluster: Cluster, namespace: str) -> Iterator[Dashboard]:
    sets = ("rbac.patchServices=true", f"rbac.writableNamespaces={{{namespace}}}")
    with released_dashboard(cluster, namespace, *sets) as (_, dash):
        yield dash


def flip(
    cluster: Cluster, dash: Dashboard, app: EchoApp, affinity: str, timeout_s: int | None = None
) -> None:
    """POST the new affinity, then wait until the dashboard's watch cache (and page) show it."""
    body: dict[str, Any] = {"session_affinity": affinity}
    if timeout_s is not None:
        body["timeout_s"] = timeout_s
    r = dash.http.post(f"/api/v1/services/{app.namespace}/{app.name}/session-affinity", json=body)
    assert r.status_code == 200, r.text

    def cached() -> bool:
        svc = dash.http.get(f"/api/v1/services/{app.namespace}/{app.name}").json()["service"]
        return bool(svc["session_affinity"] == affinity and svc["affinity_timeout_s"] == timeout_s)

    cluster.wait_for(cached, 30, f"the dashboard's cache to show sessionAffinity {affinity}")
    page = dash.http.get(f"/services/{app.namespace}/{app.name}").text
    assert f'data-affinity="{affinity}"' in page


def pods_answering(dash: Dashboard, app: EchoApp, count: int) -> dict[str, int]:
    run = dash.probe(**probe_body(app, count=count, concurrency=4))
    assert run["status"] == "done" and run["errors"] == {}, run["errors"]
    assert run["attributed"] == count, run["unattributed"]
    return {pod: n for pod, n in hits(run).items() if n}


def test_flip_none_to_client_ip_and_back(
    cluster: Cluster, affinity_dashboard: Dashboard, deploy_echo: Callable[..., EchoApp], namespace: str
) -> None:
    dash = affinity_dashboard
    app = deployed(deploy_echo, dash, namespace)  # sessionAffinity None; waits until 3 pods answer

    flip(cluster, dash, app, "ClientIP", 600)
    # kube-proxy programs the change on its own schedule: wait until small probes stay on one pod.
    cluster.wait_for(lambda: len(pods_answering(dash, app, 24)) == 1, 60, "kube-proxy to pin the client")
    run = dash.probe(**probe_body(app, count=100, concurrency=4))
    counts = {p: n for p, n in hits(run).items() if n}
    assert list(counts.values()) == [100], counts
    assert run["target"]["session_affinity"] == "ClientIP" and "ClientIP affinity" in run["verdict"]
    assert run["connections"] == 100  # new connections, and still one pod

    flip(cluster, dash, app, "None")
    cluster.wait_for(lambda: len(pods_answering(dash, app, 24)) >= 2, 60, "kube-proxy to spread again")
    counts = pods_answering(dash, app, 100)
    assert len(counts) >= 2, counts
