"""The probe form's origin fields: an exec pod of any writable namespace (and its container), a node for the
probe pod; names are checked by the server, a pod where exec is not allowed is refused with the reason."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.domain import Node, Origin
from app.kube.cache import ALL_NAMESPACES, Kind
from app.main import create_app
from app.probe.runner import ProbeRunner
from app.writepolicy import Write
from tests.unit.fakes import FakeRemote, limits, record_line
from tests.unit.kube.objects import demo_cache
from tests.unit.web.csrf import token
from tests.unit.web.sse import call

pytestmark = pytest.mark.timeout(30)
FORM = {"namespace": "shop", "service": "web", "port": "http", "count": "2", "concurrency": "1"}


@pytest.fixture
def client() -> Iterator[tuple[TestClient, FakeRemote]]:
    cache = demo_cache()
    app = create_app(Settings(csrf_secret="test"), cache=cache, start_watchers=False)
    remote = FakeRemote([record_line(1, "web-1"), record_line(2, "web-1")])
    remote.refused[(Write.POD_EXEC, "kube-system")] = "kube-system is one of the cluster's own namespaces"
    with TestClient(app, base_url="http://localhost") as c:
        runner = ProbeRunner(cache, limits(), remote=remote, origins=(Origin.PROBE_POD, Origin.EXEC))
        app.state.svc.probe_runner = runner
        yield c, remote
        call(c, runner.aclose)


def post(c: TestClient, **fields: str) -> str:
    t = token(c)
    r = c.post(
        "/probes", data={**FORM, **fields, "csrf_token": t}, headers={"HX-Request": "true", "X-CSRF-Token": t}
    )
    assert r.status_code in (200, 202), r.text
    return r.text


def test_the_form_offers_the_origin_fields(client: tuple[TestClient, FakeRemote]) -> None:
    c, _ = client
    page = c.get("/probes/new", params={"namespace": "shop", "service": "web"}).text
    for name in ("exec_namespace", "exec_pod", "exec_container", "node"):
        assert f'name="{name}"' in page, name
    assert "curl, wget, nc, python3 or bash" in page


@pytest.mark.parametrize(
    ("fields", "status", "words"),
    [
        ({"origin": "exec", "exec_pod": "Bad Pod!"}, 422, "exec_pod &#39;Bad Pod!&#39; is not a valid name"),
        (
            {"origin": "exec", "exec_namespace": "kube-system", "exec_pod": "x"},
            403,
            "cluster&#39;s own namespaces",
        ),
        ({"origin": "probe-pod", "node": "node_1"}, 422, "node &#39;node_1&#39; is not a valid name"),
        (
            {"origin": "dashboard", "concurrency": "1", "node": "n1"},
            422,
            "node applies to origins probe-pod and node only",
        ),
    ],
)
def test_bad_origin_fields_are_told_in_place(
    client: tuple[TestClient, FakeRemote], fields: dict[str, str], status: int, words: str
) -> None:
    c, remote = client
    html = post(c, **fields)
    assert f'data-status="{status}"' in html and words in html, html
    assert remote.calls == [] and remote.detections == []


def test_empty_origin_fields_are_not_given(client: tuple[TestClient, FakeRemote]) -> None:
    c, remote = client
    html = post(c, origin="probe-pod", node="", exec_pod="", exec_namespace="", exec_container="")
    assert 'class="probe-run card"' in html and remote.nodes == [None]
    html = post(c, origin="probe-pod", node="svcscope-dc-2")
    assert "on node svcscope-dc-2" in html and remote.nodes == [None, "svcscope-dc-2"]


def test_an_unknown_node_is_refused_at_submit_when_nodes_are_watched(
    client: tuple[TestClient, FakeRemote],
) -> None:
    c, remote = client
    cache = c.app.state.svc.cache  # type: ignore[attr-defined]
    cache.upsert_node(Node("svcscope-dc", "zone-a", None, (), ready=True))
    cache.upsert_node(Node("svcscope-dc-2", "zone-b", None, (), ready=True))
    cache.mark_synced(Kind.NODES, ALL_NAMESPACES)
    html = post(c, origin="probe-pod", node="no-such-node")
    assert 'data-status="422"' in html, html
    assert "node &#39;no-such-node&#39; does not exist (nodes: svcscope-dc, svcscope-dc-2)" in html, html
    body = {"namespace": "shop", "service": "web", "port": "http", "count": 2, "concurrency": 1}
    r = c.post("/api/v1/probes", json={**body, "origin": "probe-pod", "node": "no-such-node"})
    assert r.status_code == 422 and "does not exist (nodes: svcscope-dc, svcscope-dc-2)" in r.json()["detail"]
    assert remote.calls == [] and remote.nodes == []
    # A node that exists runs as before.
    assert "on node svcscope-dc-2" in post(c, origin="probe-pod", node="svcscope-dc-2")
    assert remote.nodes == ["svcscope-dc-2"]


def test_the_exec_picker_lists_running_containers_and_its_pick_is_used(
    client: tuple[TestClient, FakeRemote],
) -> None:
    c, remote = client
    page = c.get("/probes/new", params={"namespace": "shop", "service": "web"}).text
    picker = page.split('<select name="exec_pick"')[1].split("</select>")[0]
    assert '<option value="shop/web-1/app">shop/web-1 · app</option>' in picker, picker
    # The pick wins over the typed names; it is used for exec runs only.
    html = post(c, origin="exec", exec_pick="shop/web-1/app", exec_pod="typed-pod")
    assert 'class="probe-run card"' in html, html
    assert remote.detections == [("shop", "web-1", "app")]
    html = post(c, origin="exec", exec_pick="shop/web-1")
    assert 'data-status="422"' in html and "expected namespace/pod/container" in html, html
    html = post(c, origin="dashboard", concurrency="1", exec_pick="shop/web-1/app")
    assert 'class="probe-run card"' in html and remote.detections == [("shop", "web-1", "app")]
