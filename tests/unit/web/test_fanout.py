"""Fan-out runs over the web, on a real app with a filled cache and a fake probe-pod client: one probe
pod per Ready, schedulable node (or K of them), started together within the runner's bounds; the matrix
as JSON, as a page that is complete without JavaScript, and as a stream; bad input is a 4xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.domain import Origin
from app.kube import convert
from app.main import create_app
from app.probe.runner import ProbeRunner
from app.writepolicy import Write
from tests.unit.fakes import FakeRemote, limits, record_line
from tests.unit.kube.objects import demo_cache, node
from tests.unit.web.csrf import token
from tests.unit.web.sse import call, events

pytestmark = pytest.mark.timeout(30)
BODY = {"namespace": "shop", "service": "web", "port": "http", "count": 2}
LINES = [record_line(1, "web-1"), record_line(2, "web-1")]


def app_with(remote: FakeRemote, **limit_kw: Any) -> tuple[TestClient, ProbeRunner]:
    cache = demo_cache()
    for obj in (node("node-1", "zone-a"), node("node-2", "zone-b"), node("node-3", ready=False)):
        cache.upsert_node(convert.node_from_api(obj))
    cordoned = node("node-4")
    cordoned["spec"] = {"unschedulable": True}
    cache.upsert_node(convert.node_from_api(cordoned))
    app = create_app(
        Settings(csrf_secret="test", probe_fanout_max_clients=4, sse_coalesce_s=0.05),
        cache=cache,
        start_watchers=False,
    )
    client = TestClient(app, base_url="http://localhost")
    runner = ProbeRunner(
        cache, limits(**limit_kw), remote=remote, origins=(Origin.PROBE_POD,), probe_pod_namespace="svcscope"
    )
    return client, runner


@pytest.fixture
def client() -> Iterator[tuple[TestClient, FakeRemote]]:
    remote = FakeRemote(LINES)
    c, runner = app_with(remote)
    with c:
        c.app.state.svc.probe_runner = runner  # type: ignore[attr-defined]
        yield c, remote
        call(c, runner.aclose)


def wait_finished(c: TestClient, fanout_id: str) -> dict[str, Any]:
    for _ in range(200):  # bounded; each GET lets the fake clients' runs go on
        data: dict[str, Any] = c.get(f"/api/v1/fanouts/{fanout_id}").json()
        if data["finished"]:
            return data
    raise AssertionError(f"fan-out did not finish: {data}")


def test_from_every_node_pins_one_probe_pod_to_each_ready_schedulable_node(
    client: tuple[TestClient, FakeRemote],
) -> None:
    c, remote = client
    r = c.post("/api/v1/fanouts", json={**BODY, "mode": "nodes"})
    assert r.status_code == 202, r.text
    started = r.json()
    assert len(started["runs"]) == 2 and started["url"] == f"/fanouts/{started['id']}"
    assert started["skipped"] == [
        {"node": "node-3", "reason": "not Ready"},
        {"node": "node-4", "reason": "cordoned (spec.unschedulable)"},
    ]
    data = wait_finished(c, started["id"])
    assert sorted(remote.nodes) == ["node-1", "node-2"]  # type: ignore[type-var]
    rows = {row["label"]: row for row in data["rows"]}
    assert set(rows) == {"node-1", "node-2"}
    assert rows["node-1"]["zone"] == "zone-a" and rows["node-2"]["zone"] == "zone-b"
    # The demo's endpoints are on node-1, ClientIP: both clients may pick either ready pod, and got web-1.
    for row in rows.values():
        assert row["hits"] == {"web-1": 2} and row["errors"] == {} and row["fate"] == "routed"
        assert row["expected"] == ["web-1", "web-2"] and row["state"] == "as expected", row
        assert row["as_expected"] is True and row["pods_used"] == 1
    assert [col["pod"] for col in data["columns"]] == ["web-1", "web-2"]
    assert data["as_expected"] is True and data["client_ip_affinity"] is True
    assert data["verdict"] == ["ClientIP: 2 of 2 clients stuck to exactly one pod; 1 distinct pod(s) used"]
    page = c.get(f"/fanouts/{started['id']}").text  # what a reload shows, without JavaScript
    assert 'data-testid="fanout-table"' in page and 'data-row="node-1"' in page
    assert 'data-pod="web-1" data-hits="2" data-expected="true"' in page
    assert "node node-3 has no probe pod: not Ready" in page
    assert "sse-connect" not in page  # finished: nothing to follow


def test_many_clients_start_k_unpinned_probe_pods(client: tuple[TestClient, FakeRemote]) -> None:
    c, remote = client
    r = c.post("/api/v1/fanouts", json={**BODY, "mode": "clients", "clients": 3})
    assert r.status_code == 202, r.text
    data = wait_finished(c, r.json()["id"])
    assert remote.nodes == [None, None, None] and len(set(remote.names)) == 3
    assert [row["label"] for row in data["rows"]] == ["client 1", "client 2", "client 3"]
    assert data["stuck_clients"] == 3 and data["distinct_pods"] == 1


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"mode": "clients", "clients": 0}, 422, "clients must be between 1 and 4"),
        ({"mode": "clients", "clients": 5}, 422, "clients must be between 1 and 4"),
        ({"mode": "everywhere"}, 422, "mode"),
        ({"mode": "nodes", "node": "x"}, 422, "node"),
        ({"mode": "nodes", "count": 0}, 422, "count must be between"),
        ({"mode": "nodes", "service": "nope"}, 404, "nope"),
        ({"mode": "nodes", "port": "nope"}, 422, "nope"),
    ],
)
def test_bad_input_is_a_4xx_with_a_message_and_starts_nothing(
    client: tuple[TestClient, FakeRemote], body: dict[str, Any], status: int, words: str
) -> None:
    c, remote = client
    r = c.post("/api/v1/fanouts", json={**BODY, **body})
    assert r.status_code == status and words in r.text, r.text
    assert remote.calls == []


def test_unknown_fanouts_are_404_and_bad_ids_422(client: tuple[TestClient, FakeRemote]) -> None:
    c, _ = client
    assert c.get("/api/v1/fanouts/0123456789ab").status_code == 404
    assert c.get("/fanouts/0123456789ab/stream").status_code == 404
    assert c.get("/api/v1/fanouts/..%2fetc").status_code in (404, 422)
    assert c.get("/api/v1/fanouts/XYZ").status_code == 422


def test_the_runners_bounds_admit_all_clients_or_none() -> None:
    remote = FakeRemote(LINES)
    c, runner = app_with(remote, per_minute=3)
    with c:
        c.app.state.svc.probe_runner = runner  # type: ignore[attr-defined]
        r = c.post("/api/v1/fanouts", json={**BODY, "mode": "clients", "clients": 4})
        assert r.status_code == 429 and "per minute" in r.text
        assert remote.calls == [] and runner.runs() == []
        call(c, runner.aclose)


def test_probe_pods_refused_here_are_refused_and_the_form_says_why() -> None:
    remote = FakeRemote(LINES)
    remote.refused[(Write.PROBE_POD, "")] = "probe pods are not allowed (rbac.probePods)"
    c, runner = app_with(remote)
    with c:
        c.app.state.svc.probe_runner = runner  # type: ignore[attr-defined]
        r = c.post("/api/v1/fanouts", json={**BODY, "mode": "nodes"})
        assert r.status_code == 403 and "rbac.probePods" in r.text
        page = c.get("/probes/new", params={"namespace": "shop", "service": "web"}).text
        assert (
            'data-testid="fanout-nodes" disabled' in page and 'data-testid="fanout-clients" disabled' in page
        )
        assert "Not offered for this Service: probe pods are not allowed (rbac.probePods)" in page
        call(c, runner.aclose)


def test_without_the_probe_pod_origin_there_is_no_fanout_form_and_the_api_refuses() -> None:
    c, runner = app_with(FakeRemote(LINES))
    runner.origins = (Origin.DASHBOARD,)
    with c:
        c.app.state.svc.probe_runner = runner  # type: ignore[attr-defined]
        page = c.get("/probes/new", params={"namespace": "shop", "service": "web"}).text
        assert "fanout-form" not in page
        r = c.post("/api/v1/fanouts", json={**BODY, "mode": "nodes"})
        assert r.status_code == 422 and "origin 'probe-pod' is not enabled" in r.text


def test_the_form_redirects_to_the_page_and_the_stream_ends_with_the_final_block(
    client: tuple[TestClient, FakeRemote],
) -> None:
    c, _ = client
    page = c.get("/probes/new", params={"namespace": "shop", "service": "web"}).text
    assert 'data-testid="fanout-nodes"' in page and 'max="4"' in page
    t = token(c)
    r = c.post(
        "/fanouts",
        data={**BODY, "mode": "nodes", "csrf_token": t, "count": "2", "timeout_s": "1", "clients": "5"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    url = r.headers["location"]
    with c.stream("GET", f"{url}/stream") as s:
        got = events(s.iter_lines(), 50)
    assert got[-1][0] == "done" and 'data-testid="fanout-table"' in got[-1][1]
    assert all(kind == "matrix" for kind, _ in got[:-1])
    assert "sse-connect" not in got[-1][1]
