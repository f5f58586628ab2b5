"""Pages, fragments, JSON API, errors and SSE against a pre-filled cache (no cluster)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.domain import ObjectKey
from app.kube import convert
from app.kube.cache import Kind, ServiceCache
from app.main import create_app
from tests.unit.kube.objects import demo_cache, svc
from tests.unit.web.sse import call, events


@pytest.fixture
def cache() -> ServiceCache:
    return demo_cache()


@pytest.fixture
def client(cache: ServiceCache) -> Iterator[TestClient]:
    app = create_app(Settings(csrf_secret="test", page_size=2), cache=cache, start_watchers=False)
    with TestClient(app, base_url="http://localhost") as c:
        yield c


def flat(text: str) -> str:
    return " ".join(text.split())


def test_list_page_full_and_paginated(client):
    r = client.get("/?type=all")
    assert r.status_code == 200 and "<html" in r.text
    assert 'sse-connect="/streams/services?' in r.text
    assert "4 Services" in flat(r.text) and "page 1 of 2" in flat(r.text)
    assert 'href="/?type=all&amp;page=2"' in r.text  # plain links work without JavaScript
    r = client.get("/?type=all&page=2")
    assert "web" in r.text and "page 2 of 2" in flat(r.text)


def test_list_shows_cluster_ip_services_by_default(client):
    r = client.get("/")
    assert "3 Services" in flat(r.text) and "example.invalid" not in r.text
    assert 'value="ClusterIP" checked' in flat(r.text) and 'value="all" checked' not in flat(r.text)
    r = client.get("/?type=Headless&type=ExternalName")
    assert "example.invalid" in r.text


def test_list_filters_and_fragment(client):
    r = client.get("/?q=tier%3Dfront&namespace=shop", headers={"HX-Request": "true"})
    assert r.status_code == 200 and "<html" not in r.text
    assert 'id="service-list"' in r.text and "1 Service " in flat(r.text) and ">web</a>" in r.text
    r = client.get("/?type=ExternalName")
    assert "→ example.invalid" in r.text and "1 Service " in flat(r.text)
    r = client.get("/?q=198.19.0.31")
    assert ">db</a>" in r.text


def test_detail_page_shows_routing_and_diagnostics(client):
    r = client.get("/services/shop/web")
    assert r.status_code == 200
    t = r.text
    assert "web-1 → 8080" in t and "web-3 → 9090" in t
    assert 'web-4 → <span class="badge bad">missing</span>' in t
    assert "no container port named &#39;web&#39;" in t
    assert "resolves to different numbers per pod" in t
    assert "(absent → read as true)" in t and "(absent → read as false)" in t
    assert "ClientIP" in t and "60 s" in t
    assert "web.shop.svc.cluster.local" in t and "curl -s http://198.19.0.30:80/" in t
    assert "ping does not answer on a ClusterIP" in t
    assert 'sse-connect="/streams/services/shop/web"' in t
    assert "managedFields" not in t and "sessionAffinity: ClientIP" in t


def test_detail_diagnostics_for_broken_services(client):
    t = client.get("/services/shop/db").text
    assert "matches no pods" in t and "No endpoints" in t
    t = client.get("/services/shop/peers").text
    assert "Headless Service" in t
    t = client.get("/services/shop/ext").text
    assert "CNAME" in t


def test_values_from_the_cluster_are_escaped(client, cache):
    evil = svc("evil", "shop", labels={"x": "<script>alert(1)</script>"}, selector={"a": "<b>"})
    call(client, cache.upsert_service, convert.service_from_api(evil), convert.strip_for_display(evil))
    for url in ("/services/shop/evil", "/?q=evil"):
        t = client.get(url).text
        assert "<script>alert" not in t and "<b>" not in t


@pytest.mark.parametrize(
    ("url", "status", "text"),
    [
        ("/services/shop/nope", 404, "Service shop/nope not found"),
        ("/services/nowhere/web", 404, "namespace is unknown"),
        ("/?namespace=nowhere", 404, "Namespace &#39;nowhere&#39; is unknown"),
        ("/?page=0", 422, "page"),
        ("/?sort=bogus", 422, "sort"),
        ("/?type=Bogus", 422, "type"),
        ("/services/Bad_Name/x", 422, "namespace"),
        ("/no/such/page", 404, "Nothing at /no/such/page"),
    ],
)
def test_html_errors(client, url, status, text):
    r = client.get(url)
    assert r.status_code == status and "text/html" in r.headers["content-type"]
    assert text in r.text and "Traceback" not in r.text


@pytest.mark.parametrize(
    ("url", "status", "text"),
    [
        ("/api/v1/services/shop/nope", 404, "Service shop/nope not found"),
        ("/api/v1/services?namespace=nowhere", 404, "unknown"),
        ("/api/v1/services?size=0", 422, "size"),
        ("/api/v1/services?order=sideways", 422, "order"),
    ],
)
def test_json_errors(client, url, status, text):
    r = client.get(url)
    assert r.status_code == status and r.headers["content-type"] == "application/json"
    assert text in r.json()["detail"]


def test_api_list_and_detail(client):
    body = client.get("/api/v1/services?namespace=shop&type=all&sort=endpoints&order=desc&size=10").json()
    assert body["total"] == 4 and body["synced"] is True and body["items"][0]["name"] == "web"
    web = body["items"][0]
    assert (web["endpoints_ready"], web["endpoints_total"]) == (2, 3)
    assert web["ports"][0]["label"] == "http:80→web/TCP"
    d = client.get(web["url"]).json()
    assert d["ports"][0]["per_pod"] == {"web-1": 8080, "web-2": 8080, "web-3": 9090, "web-4": None}
    assert d["ports"][0]["missing"] == ["web-4"]
    first = d["endpoints"][0]["conditions"]
    assert first["ready"] is None and first["effective_ready"] is True and first["effective_serving"] is True
    assert {p["name"]: p["via"] for p in d["pods"]}["web-4"] == "selector"
    assert any(x["level"] == "warning" for x in d["diagnostics"])
    paths = client.get("/api/openapi.json").json()["paths"]
    assert "/api/v1/services" in paths and "/api/v1/services/{namespace}/{name}" in paths


def test_health_ready_metrics():
    cache = ServiceCache()
    app = create_app(Settings(csrf_secret="t"), cache=cache, start_watchers=False)
    with TestClient(app, base_url="http://localhost") as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").status_code == 503
        for kind in Kind:
            call(c, cache.mark_synced, kind, "")
        assert c.get("/readyz").status_code == 200
        m = c.get("/metrics").text
        assert 'svcscope_cache_objects{resource="services"} 0.0' in m and "svcscope_sse_clients" in m


def test_sse_list_stream_pushes_changes_and_ends_on_shutdown(client, cache):
    state = client.app.state.svc
    with client.stream("GET", "/streams/services?namespace=shop&type=all&size=50") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        ((event, html),) = events(lines, 1)
        assert event == "rows" and "4 Services" in flat(html)
        new = svc("fresh", "shop")
        call(client, cache.upsert_service, convert.service_from_api(new), None)
        ((event, html),) = events(lines, 1)
        assert "5 Services" in flat(html) and ">fresh</a>" in html
        assert state.hub.subscriber_count == 1
        call(client, state.hub.close)
        list(lines)  # the stream ends instead of hanging (the per-test timeout would catch that)


def test_sse_detail_stream_reports_deletion(client, cache):
    state = client.app.state.svc
    with client.stream("GET", "/streams/services/shop/db") as r:
        lines = r.iter_lines()
        got = events(lines, 2)
        assert [e for e, _ in got] == ["detail", "yaml"]
        call(client, cache.delete_service, ObjectKey("shop", "db"))
        got = events(lines, 2)
        assert "no longer exists" in got[0][1] and got[1] == ("yaml", "# deleted")
        call(client, state.hub.close)
