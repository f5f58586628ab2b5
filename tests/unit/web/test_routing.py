"""The routing rule on the Service page and the expected-versus-observed verdict of a run, rendered."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.domain import Node
from app.kube import convert
from app.kube.cache import ALL_NAMESPACES, Kind, ServiceCache
from app.main import create_app
from app.probe.runner import ProbeRunner
from tests.unit.fakes import WEB, Cluster, limits, make_cluster
from tests.unit.kube.objects import endpoint, eps, fill, node, svc
from tests.unit.web.sse import call
from tests.unit.web.test_probes import SECRET, filled_cache, wait_done

pytestmark = pytest.mark.timeout(30)
HOSTILE = '<img src=x onerror="alert(1)">'


def flat(text: str) -> str:
    return " ".join(text.split())


def _placed(ip: str, pod: str, on: str, zone: str) -> dict[str, object]:
    ep = endpoint(ip, pod, "shop")
    ep["nodeName"], ep["zone"] = on, zone
    return ep


@pytest.fixture
def cache() -> ServiceCache:
    cache = ServiceCache()
    for kind in (Kind.SERVICES, Kind.ENDPOINTSLICES, Kind.PODS):
        cache.mark_synced(kind, "")
    fill(
        cache,
        services=[svc("local", "shop", internalTrafficPolicy="Local")],
        slices=[eps("local-1", "local", [_placed("198.18.0.10", "web-a", "n1", "zone-a")], "shop")],
    )
    cache.replace(Kind.NODES, ALL_NAMESPACES, [convert.node_from_api(node(n)) for n in ("n1", "n2")])
    cache.mark_synced(Kind.NODES, ALL_NAMESPACES)
    return cache


@pytest.fixture
def client(cache: ServiceCache) -> Iterator[TestClient]:
    app = create_app(Settings(csrf_secret="test"), cache=cache, start_watchers=False)
    with TestClient(app, base_url="http://localhost") as c:
        yield c


def test_service_page_shows_the_rule_and_each_nodes_fate(client) -> None:
    t = flat(client.get("/services/shop/local").text)
    assert "Routing rule in effect" in t
    assert 'data-testid="rule-policy">Local<' in t
    assert "internalTrafficPolicy Local: a client reaches only endpoints on its own node" in t
    assert '<tr data-node="n1" data-fate="routed">' in t and '<tr data-node="n2" data-fate="dropped">' in t
    assert "dropped: no local endpoint" in t
    # The rule section comes before the diagnostics: it is what users look for first.
    assert t.index("Routing rule in effect") < t.index("<h2>Diagnostics</h2>")


def test_without_node_permission_the_page_says_so(client, cache) -> None:
    call(client, lambda: cache.set_problem(Kind.NODES, ALL_NAMESPACES, "Forbidden", forbidden=True))
    t = client.get("/services/shop/local").text
    assert "node zones unknown: no permission to list nodes" in t
    assert "Forbidden" not in t  # not as a page-wide problem banner


def test_hostile_annotation_and_labels_are_data_and_bounded(client, cache) -> None:
    evil = svc("evil", "shop", trafficDistribution=HOSTILE)
    evil["metadata"]["annotations"] = {"service.kubernetes.io/topology-mode": HOSTILE * 200}
    evil_ep = _placed("198.18.0.11", "web-b", "n1", HOSTILE)
    evil_ep["hints"] = {"forZones": [{"name": HOSTILE}], "forNodes": [{"name": HOSTILE}]}
    call(client, fill, cache, [evil], [eps("evil-1", "evil", [evil_ep], "shop")])
    evil_node = dataclasses.replace(convert.node_from_api(node("n3")), zone=HOSTILE)
    call(client, cache.upsert_node, evil_node)
    r = client.get("/services/shop/evil")
    assert r.status_code == 200
    assert HOSTILE not in r.text and "&lt;img src=x" in r.text
    # 200 copies of the annotation would be 6 kB: the section shows its start and how much was left out
    # (the collapsed YAML further down has the object as it is).
    section = r.text[r.text.index('id="routing-rule"') : r.text.index("<h2>Diagnostics</h2>")]
    assert section.count("&lt;img src=x") < 15 and "more characters)" in section


@pytest.fixture
async def probing() -> AsyncIterator[tuple[httpx.AsyncClient, Cluster, ServiceCache]]:
    async for cluster in make_cluster(3):
        cache = filled_cache(cluster)
        app = create_app(Settings(csrf_secret=SECRET, sse_coalesce_s=0.05), cache=cache, start_watchers=False)
        async with app.router.lifespan_context(app):
            runner = ProbeRunner(cache, limits(), dial=cluster.dial, dashboard_node="node-1")
            app.state.svc.probe_runner = runner
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
                yield c, cluster, cache
            await runner.aclose()


BODY = {"namespace": "demo", "service": "web", "port": "http", "count": 9, "concurrency": 3}


async def _run_page(c: httpx.AsyncClient) -> str:
    """Start a run from the dashboard (on node-1), wait for its end, and return its page."""
    run_id = (await c.post("/api/v1/probes", json=BODY)).json()["id"]
    await wait_done(c, run_id)
    return flat((await c.get(f"/runs/{run_id}")).text)


async def test_run_shows_the_expected_set_beside_the_hits(probing) -> None:
    c, _, cache = probing
    cache.upsert_node(Node("node-1", HOSTILE, None, (), ready=True))
    t = await _run_page(c)
    assert 'data-testid="routing-verdict" data-as-expected="true" data-fate="routed"' in t
    assert 'data-testid="routing-expected">web-0, web-1, web-2<' in t
    assert "as expected: every answer came from the 3 expected endpoint(s)" in t
    assert HOSTILE not in t and "zone <code>&lt;img src=x" in t


async def test_a_pod_that_should_not_answer_is_named(probing) -> None:
    c, _, cache = probing
    svc_ = cache.service(WEB)
    assert svc_ is not None
    cache.upsert_service(dataclasses.replace(svc_, internal_traffic_policy="Local"))
    # web-2 moves to node-2: a dashboard on node-1 should reach web-0 and web-1 only. The fake balancer
    # ignores the policy and spreads over all three, which is exactly the mismatch the verdict must name.
    (es,) = cache.slices_for(WEB)
    moved = [
        dataclasses.replace(e, node_name="node-2") if e.addresses == ("198.18.0.12",) else e
        for e in es.endpoints
    ]
    cache.upsert_slice(dataclasses.replace(es, endpoints=tuple(moved)))
    t = await _run_page(c)
    assert 'data-as-expected="false"' in t
    assert "pod web-2 answered but should not (not on the client&#39;s node)" in t
    assert '<tr data-pod="web-2" data-hits="3" data-expected="false">' in t


async def test_the_json_api_carries_the_verdict(probing) -> None:
    c, _, _ = probing
    run_id = (await c.post("/api/v1/probes", json=BODY)).json()["id"]
    data = await wait_done(c, run_id)
    assert data["client"]["node"] == "node-1"
    routing = data["routing"]
    assert routing["fate"] == "routed" and routing["expected"] == ["web-0", "web-1", "web-2"]
    assert routing["as_expected"] is True and routing["verdict"][0].startswith("as expected")
    # The comparison names each client the same way, node included.
    other = (await c.post("/api/v1/probes", json=BODY)).json()["id"]
    await wait_done(c, other)
    compared = (await c.get(f"/api/v1/probes/compare?ids={run_id},{other}")).json()
    assert [r["client"] for r in compared["runs"]] == [data["client"]] * 2
