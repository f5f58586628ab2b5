"""What a first-time user meets: the Probe action on the list and at the top of a Service page, a form
that offers only combinations that work, honest list badges, sort direction, a live namespace list, the
type filter's choices, URLs that match the screen, and docs and static files served from the image."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.kube import convert
from app.kube.cache import ServiceCache
from app.main import create_app
from app.web.security import API_DOCS_CONTENT_SECURITY_POLICY
from tests.unit.kube.objects import demo_cache, svc
from tests.unit.web.csrf import token as fetch_token
from tests.unit.web.sse import call, events

SECRET = "test"


@pytest.fixture
def cache() -> ServiceCache:
    c = demo_cache()
    c.upsert_service(
        convert.service_from_api(
            svc(
                "multi",
                "shop",
                ip="198.19.0.40",
                selector={"app": "web"},
                ports=[
                    {"name": "tcp", "port": 9000, "targetPort": 9000},
                    {"name": "udp", "port": 9001, "targetPort": 9001, "protocol": "UDP"},
                    {"name": "grpc", "port": 9002, "targetPort": 9002, "appProtocol": "kubernetes.io/h2c"},
                    {"name": "metrics", "port": 9003, "targetPort": 9003, "appProtocol": "prometheus"},
                    {"name": "http-admin", "port": 9004, "targetPort": 9004},
                ],
            )
        ),
        None,
    )
    return c


@pytest.fixture
def client(cache: ServiceCache) -> Iterator[TestClient]:
    app = create_app(Settings(csrf_secret=SECRET), cache=cache, start_watchers=False)
    with TestClient(app, base_url="http://localhost") as c:
        yield c


def flat(text: str) -> str:
    return " ".join(text.split())


def test_list_rows_offer_probe_and_explain_red_badges(client: TestClient) -> None:
    html = client.get("/").text
    probes = re.findall(r'href="/probes/new\?namespace=shop&amp;service=([a-z-]+)"', html)
    assert sorted(probes) == ["db", "multi", "web"]  # not the headless one: nothing to probe there
    assert "the selector matches no pods" in html  # db: 0/0 with a selector matching nothing
    assert 'title="1 of 3 endpoints not ready"' in html  # web: 2/3


def test_type_filter_choices_do_not_overlap_and_none_ticked_is_answered(client: TestClient) -> None:
    assert ">peers</a>" in client.get("/?type=Headless").text
    assert ">peers</a>" not in client.get("/?type=ClusterIP").text
    assert ">peers</a>" in client.get("/").text  # the default shows both
    r = client.get("/?typed=1", headers={"HX-Request": "true"})
    assert r.status_code == 422 and "No Service type is ticked" in r.text
    assert client.get("/?typed=1&type=ClusterIP").status_code == 200


def test_sort_direction_is_shown_and_search_matches_ports_and_affinity(client: TestClient) -> None:
    html = client.get("/?sort=ip&order=desc").text
    assert 'aria-sort="descending"' in html and "▼" in html
    assert html.count("aria-sort=") == 1
    assert 'href="/?sort=ip"' in html  # a click on the active header reverses
    udp = flat(client.get("/?q=udp").text)
    assert ">multi</a>" in udp and ">db</a>" not in udp
    assert ">web</a>" in client.get("/?q=clientip").text and ">db</a>" not in client.get("/?q=clientip").text


def test_page_size_is_a_form_control(client: TestClient) -> None:
    html = client.get("/?size=20").text
    assert '<select name="size">' in html and '<option value="20" selected>' in html


def test_namespace_list_is_live(client: TestClient, cache: ServiceCache) -> None:
    state = client.app.state.svc  # type: ignore[attr-defined]
    with client.stream("GET", "/streams/services?type=all") as r:
        lines = r.iter_lines()
        ((event, _),) = events(lines, 1)
        assert event == "rows"
        call(client, cache.upsert_service, convert.service_from_api(svc("new", "brand-new")), None)
        got = dict(events(lines, 2))
        assert got["namespaces"] == '["brand-new", "shop"]'
        call(client, state.hub.close)


def test_service_page_puts_probe_first_and_the_form_follows_the_port(client: TestClient) -> None:
    html = client.get("/services/shop/multi").text
    top = html.index('data-testid="probe-top"')
    assert top < html.index('id="service-detail"')  # above the six sections
    assert 'form="probe-form"' in html and 'id="probe-form"' in html
    ports = dict(re.findall(r'<option value="([a-z-]+)" data-protocol="(\w+)"', html))
    assert ports == {"tcp": "TCP", "udp": "UDP", "grpc": "HTTP", "metrics": "TCP", "http-admin": "HTTP"}
    assert '<option value="TCP" selected>' in html  # the first port is raw TCP
    assert "data-concurrency-limits=" in html and "&#34;dashboard&#34;" in html


def test_probe_form_keeps_the_service_page_url(client: TestClient) -> None:
    token = fetch_token(client)
    form = {"namespace": "shop", "service": "web", "port": "http", "csrf_token": token, "count": "1"}
    r = client.post("/probes", data=form, headers={"HX-Request": "true", "X-CSRF-Token": token})
    assert r.status_code == 202 and 'class="probe-run card"' in r.text
    assert "HX-Push-Url" not in r.headers


def test_a_service_without_endpoints_is_refused_before_sending(client: TestClient) -> None:
    token = fetch_token(client)
    form = {"namespace": "shop", "service": "db", "port": "http", "csrf_token": token}
    r = client.post("/probes", data=form, headers={"HX-Request": "true", "X-CSRF-Token": token})
    assert 'data-status="422"' in r.text and "no ready endpoints: nothing would answer" in r.text
    api = client.post("/api/v1/probes", json={"namespace": "shop", "service": "db", "port": "http"})
    assert api.status_code == 422 and "the selector matches no pods" in api.json()["detail"]
    assert client.get("/api/v1/probes").json() == []  # nothing was started


def test_api_docs_are_served_from_the_image(client: TestClient) -> None:
    docs = client.get("/api/docs")
    html = docs.text
    # Swagger UI writes style attributes, so its page alone allows inline styles; scripts stay 'self'.
    assert docs.headers["content-security-policy"] == API_DOCS_CONTENT_SECURITY_POLICY
    assert "style-src 'self' 'unsafe-inline'" in API_DOCS_CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in API_DOCS_CONTENT_SECURITY_POLICY
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls and all(u.startswith(("/static/", "data:")) for u in urls), urls
    assert "<script>" not in html  # no inline script: the CSP forbids it
    for url in urls:
        if url.startswith("/static/"):
            assert client.get(url).status_code == 200, url


def test_static_files_are_compressed_and_cached(client: TestClient) -> None:
    r = client.get("/static/htmx-2.0.11.min.js", headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip" and "immutable" in r.headers["cache-control"]
    page = client.get("/").text
    css = re.search(r'href="(/static/svcscope\.css\?v=[0-9a-f]{12})"', page)
    assert css is not None
    assert "immutable" in client.get(css.group(1)).headers["cache-control"]
    assert client.get("/static/svcscope.css").headers["cache-control"] == "no-cache"
    raw = client.get("/static/svcscope.js", headers={"Accept-Encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip" and b"htmx:responseError" in raw.content
    assert gzip.compress(b"") is not None
