"""Compare several origins on the real cluster: the dashboard's own process, a probe pod, exec in a pod.

Each origin is a different client to kube-proxy. With ``sessionAffinity: ClientIP`` each run is pinned
to one pod (maybe a different one per origin), and the comparison shows them side by side; with
``None`` every origin spreads over the replicas again.

The dashboard is the chart installed into the test's namespace with its own ServiceAccount and RBAC
(probe pods there, exec and writes only there), reached through ``kubectl port-forward``; its pod is the
client of its own runs.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from scripts import demo
from tests.e2e.conftest import Cluster, EchoApp, start_client_pod
from tests.e2e.dashboard import Dashboard, deployed, hits, probe_body, wait_serving
from tests.e2e.released import dashboard_pod, released_dashboard

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

COUNT = 30


@pytest.fixture
def origins_dashboard(cluster: Cluster, namespace: str) -> Iterator[tuple[Dashboard, dict[str, Any]]]:
    """The dashboard and its pod (the client of its own runs)."""
    sets = ("rbac.probePods=true", "rbac.exec=true", f"rbac.writableNamespaces={{{namespace}}}")
    with released_dashboard(cluster, namespace, *sets) as (release, dash):
        yield dash, dashboard_pod(cluster, release)


@pytest.fixture
def client_pod(cluster: Cluster, namespace: str) -> str:
    """The exec origin runs the client of the dashboard's own image (the one under test), not the shared
    echo image another checkout may have rebuilt."""
    return start_client_pod(cluster, namespace, image=demo.IMAGE)


def answering(run: dict[str, Any]) -> dict[str, int]:
    return {pod: n for pod, n in hits(run).items() if n}


def clean(run: dict[str, Any], origin: str) -> dict[str, Any]:
    """A finished run of ``origin`` where every request was answered and attributed."""
    assert run["status"] == "done", (origin, run["error"])
    assert run["spec"]["origin"] == origin
    assert run["errors"] == {} and run["attributed"] == COUNT, (origin, run["errors"], run["unattributed"])
    assert run["connections"] == COUNT  # a new connection per request
    return run


def start_exec(cluster: Cluster, dash: Dashboard, app: EchoApp, pod: str) -> str:
    """Start an exec run; the dashboard refuses it (422) until its cache has the pod Running."""

    def started() -> str | None:
        body = probe_body(app, count=COUNT, concurrency=1, origin="exec", exec_pod=pod)
        r = dash.http.post("/api/v1/probes", json=body)
        assert r.status_code in (202, 422), r.text
        return str(r.json()["id"]) if r.status_code == 202 else None

    run_id = cluster.wait_for(started, 30, f"the dashboard to accept an exec run in {pod}")
    assert run_id is not None
    return run_id


def follow_recent_runs(
    dash: Dashboard, namespace: str, name: str, connected: threading.Event, until: Callable[[str], bool]
) -> list[str]:
    """The Service page's live Recent runs table: every ``runs`` event's HTML, until ``until`` holds."""
    tables: list[str] = []
    with (
        httpx.Client(base_url=str(dash.http.base_url), timeout=60) as c,
        c.stream("GET", f"/streams/services/{namespace}/{name}/runs") as s,
    ):
        event, data = "", []
        for line in s.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data.append(line.removeprefix("data: "))
            elif not line and event:
                if event == "runs":
                    tables.append("\n".join(data))
                    connected.set()
                    if until(tables[-1]) or len(tables) > 200:
                        break
                event, data = "", []
    return tables


def test_compare_origins_client_ip_then_none(
    cluster: Cluster,
    origins_dashboard: tuple[Dashboard, dict[str, Any]],
    deploy_echo: Callable[..., EchoApp],
    namespace: str,
    client_pod: str,
) -> None:
    dash, own = origins_dashboard
    app = deployed(deploy_echo, dash, namespace, service_spec="sessionAffinity: ClientIP\n")
    client_ip = cluster.get("pod", client_pod, "-n", namespace)["status"]["podIP"]

    # -- ClientIP: three origins, three clients, each pinned to one pod.
    exec_id = start_exec(cluster, dash, app, client_pod)
    from_dashboard = clean(dash.probe(**probe_body(app, count=COUNT, concurrency=3)), "dashboard")
    from_pod = clean(
        dash.probe(**probe_body(app, count=COUNT, concurrency=1, origin="probe-pod"), timeout=180),
        "probe-pod",
    )
    from_exec = clean(dash.wait_run(exec_id, timeout=180), "exec")
    runs = [from_dashboard, from_pod, from_exec]
    for run in runs:
        pinned = answering(run)
        assert list(pinned.values()) == [COUNT], (run["spec"]["origin"], pinned)
        assert run["target"]["session_affinity"] == "ClientIP"
        assert "consistent with ClientIP affinity" in run["verdict"], run["verdict"]

    clients = [run["client"] for run in runs]
    # Each client is named with its node (the expected routing set depends on it).
    node = own["spec"]["nodeName"]  # one node: every client runs there
    assert clients[0] == {"pod": own["metadata"]["name"], "ip": own["status"]["podIP"], "node": node}
    assert clients[1]["pod"] == f"svcscope-probe-{from_pod['id']}" and clients[1]["node"] == node
    assert clients[2] == {"pod": client_pod, "ip": client_ip, "node": node}
    assert len({(c["pod"], c["ip"]) for c in clients}) == 3, clients
    print(f"\nClientIP: {[(c['pod'], answering(r)) for c, r in zip(clients, runs, strict=True)]}")

    ids = [run["id"] for run in runs]
    r = dash.http.get("/api/v1/probes/compare", params={"ids": ",".join(ids)})
    assert r.status_code == 200, r.text
    side = r.json()
    assert [x["id"] for x in side["runs"]] == ids
    assert [x["origin"] for x in side["runs"]] == ["dashboard", "probe-pod", "exec"]
    assert [x["client"] for x in side["runs"]] == clients
    # Per run (column), exactly one pod row has every hit.
    for col, run in enumerate(runs):
        cells = {row["pod"]: row["runs"][col] for row in side["pods"]}
        full = [pod for pod, cell in cells.items() if cell and cell["hits"]]
        assert full == list(answering(run)), (col, cells)
        assert cells[full[0]]["share"] == 1.0
    assert any("with ClientIP affinity kube-proxy pins each client IP" in n for n in side["notes"]), side
    page = dash.http.get("/runs/compare", params={"ids": ids})
    assert page.status_code == 200 and all(i in page.text for i in ids)
    service_page = dash.http.get(f"/services/{namespace}/{app.name}").text
    assert all(f'data-run="{i}"' in service_page for i in ids)

    # -- None: the same origins spread over the replicas again.
    cluster.kubectl(
        "patch",
        "service",
        app.name,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"sessionAffinity": "None", "sessionAffinityConfig": null}}',
    )

    def dashboard_sees_none() -> bool:
        svc = dash.http.get(f"/api/v1/services/{namespace}/{app.name}").json()["service"]
        return bool(svc["session_affinity"] == "None")

    cluster.wait_for(dashboard_sees_none, 30, "the dashboard's cache to show sessionAffinity None")
    wait_serving(dash, probe_body(app), 3)  # kube-proxy has dropped the affinity rules
    spread_dashboard = clean(dash.probe(**probe_body(app, count=COUNT, concurrency=3)), "dashboard")
    # The Service page's table follows the probe pod's run live: running, then done.
    started: list[str] = []
    connected = threading.Event()

    def row(html: str) -> str:
        found = re.search(rf'data-run="{started[0]}".*?</tr>', html, re.S) if started else None
        return found.group(0) if found else ""

    def finished_row(html: str) -> bool:
        return f"{COUNT}/{COUNT}" in row(html) and "running" not in row(html)

    with ThreadPoolExecutor(1) as pool:
        live = pool.submit(follow_recent_runs, dash, namespace, app.name, connected, finished_row)
        assert connected.wait(30), "the Recent runs stream sent no table"
        started.append(dash.start(**probe_body(app, count=COUNT, concurrency=1, origin="probe-pod")))
        spread_pod = clean(dash.wait_run(started[0], timeout=180), "probe-pod")
        tables = live.result(timeout=30)
    mine = [row(t) for t in tables if row(t)]
    assert mine and "running</span>" in mine[0] and finished_row(tables[-1]), mine
    for run in (spread_dashboard, spread_pod):
        assert run["target"]["session_affinity"] == "None"
        assert len(answering(run)) >= 2, (run["spec"]["origin"], answering(run))
    print(f"None: dashboard {answering(spread_dashboard)}, probe pod {answering(spread_pod)}")

    r = dash.http.get("/api/v1/probes/compare", params={"ids": f"{from_dashboard['id']},{spread_pod['id']}"})
    assert r.status_code == 200
    assert any("session affinity differed" in n for n in r.json()["notes"]), r.json()["notes"]
