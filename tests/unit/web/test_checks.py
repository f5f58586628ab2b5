"""The Service page's ping/TCP/DNS checks over the web: CSRF, origins as the probe runner allows them,
results rendered as data, refusals in place."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.domain import Origin
from app.main import create_app
from app.probe.runner import ProbeRunner
from tests.unit.fakes import FakeRemote, limits
from tests.unit.kube.objects import demo_cache
from tests.unit.web.csrf import token
from tests.unit.web.sse import call

pytestmark = pytest.mark.timeout(30)
URL = "/services/shop/web/checks"


def out(check: str, target: str, **fields: object) -> str:
    return json.dumps({"check": check, "target": target, **fields})


@pytest.fixture
def client() -> Iterator[tuple[TestClient, FakeRemote]]:
    cache = demo_cache()
    app = create_app(Settings(csrf_secret="test"), cache=cache, start_watchers=False)
    remote = FakeRemote([])
    with TestClient(app, base_url="http://localhost") as c:
        runner = ProbeRunner(cache, limits(per_minute=3), remote=remote, origins=(Origin.NODE,))
        app.state.svc.probe_runner = runner
        yield c, remote
        call(c, runner.aclose)


def post(c: TestClient, **fields: str) -> str:
    t = token(c)
    r = c.post(URL, data={**fields, "csrf_token": t}, headers={"HX-Request": "true", "X-CSRF-Token": t})
    assert r.status_code == 200, r.text
    return r.text


def test_the_service_page_offers_the_checks_with_the_enabled_origins(
    client: tuple[TestClient, FakeRemote],
) -> None:
    c, _ = client
    page = c.get("/services/shop/web").text
    assert 'id="checks-form"' in page and f'hx-post="{URL}"' in page
    assert '<option value="node">a node (hostNetwork probe pod)</option>' in page


def test_node_origin_runs_in_a_host_network_pod_and_renders_replies_as_data(
    client: tuple[TestClient, FakeRemote],
) -> None:
    c, remote = client
    remote.lines = [
        out("ping", "198.19.0.30", result="no_net_raw"),
        out("tcp", "198.19.0.30:80", result="connected", ms=2.0),
        out("dns", "web", result="resolved", addresses=["198.19.0.30"]),
        out("dns", "web.shop", result="error", detail="<script>alert(1)</script>"),
        out("dns", "web.shop.svc.cluster.local", result="resolved", addresses=["198.19.0.30"]),
    ]
    html = post(c, origin="node", node="svcscope-dc")
    assert remote.host_network == [True] and remote.nodes == ["svcscope-dc"]
    assert remote.calls[0][2][:2] == ["python3", "-c"]
    assert 'data-kind="ping" data-target="198.19.0.30" data-result="no_net_raw" data-ok="unknown"' in html
    assert 'data-kind="tcp" data-target="198.19.0.30:80" data-result="connected" data-ok="true"' in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert html.count('data-ok="true"') == 3  # tcp and the two qualified names


def test_the_json_api_answers_the_same(client: tuple[TestClient, FakeRemote]) -> None:
    c, remote = client
    remote.lines = [out("tcp", "198.19.0.30:80", result="refused")]
    r = c.post(
        "/api/v1/services/shop/web/checks", json={"origin": "node"}, headers={"X-CSRF-Token": token(c)}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["origin"] == "node" and "hostNetwork" in body["where"]
    tcp = next(x for x in body["checks"] if x["kind"] == "tcp")
    assert tcp["ok"] is False and "refused" in tcp["reason"]


@pytest.mark.parametrize(
    ("fields", "status", "words"),
    [
        ({"origin": "exec", "exec_pod": "web-1"}, 422, "origin &#39;exec&#39; is not enabled"),
        ({"origin": "node", "node": "Bad_Node"}, 422, "node &#39;Bad_Node&#39; is not a valid name"),
        ({"origin": "node", "port": "nope"}, 422, "has no port &#39;nope&#39;"),
    ],
)
def test_bad_requests_are_told_in_place(
    client: tuple[TestClient, FakeRemote], fields: dict[str, str], status: int, words: str
) -> None:
    c, remote = client
    html = post(c, **fields)
    assert f'data-status="{status}"' in html and words in html, html
    assert remote.calls == []


def test_without_csrf_nothing_runs_and_the_rate_is_bounded(client: tuple[TestClient, FakeRemote]) -> None:
    c, remote = client
    assert c.post(URL, data={"origin": "node"}).status_code == 403
    assert remote.calls == []
    for _ in range(3):
        post(c, origin="node")
    assert 'data-status="429"' in post(c, origin="node")
    assert len(remote.calls) == 3


def test_an_unknown_service_is_a_404(client: tuple[TestClient, FakeRemote]) -> None:
    c, _ = client
    assert 'data-status="404"' in post_to(c, "/services/shop/nope/checks")


def post_to(c: TestClient, url: str) -> str:
    t = token(c)
    return c.post(url, data={"csrf_token": t}, headers={"HX-Request": "true", "X-CSRF-Token": t}).text
