"""What a stale watch looks like to users: /readyz names it, every page carries the banner, the banner
fragment (polled) follows the state."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.kube.freshness import Liveness, WatchAge
from app.main import create_app
from tests.unit.kube.objects import demo_cache


@dataclass
class FakeWatcher:
    resource: str
    age_s: float
    stale: bool
    liveness: Liveness | None = None

    def age(self, now: float | None = None) -> WatchAge:
        why = "watch stream open" if self.stale else None
        return WatchAge(self.resource, "", self.age_s, self.stale, why)


@pytest.fixture
def app_and_client() -> Iterator[tuple[Any, TestClient]]:
    cache = demo_cache()
    app = create_app(Settings(csrf_secret="test"), cache=cache, start_watchers=False)
    with TestClient(app, base_url="http://localhost") as c:
        yield app, c


def test_readyz_names_a_stale_watch_but_stays_ready(app_and_client):
    app, client = app_and_client
    watchers = app.state.svc.watchers
    watchers += [FakeWatcher("services", 2.0, False), FakeWatcher("pods", 23.4, True)]
    r = client.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["ready"] is True and body["current"] is False
    assert body["stale"] == [{"resource": "pods", "scope": "*", "age_s": 23.4, "why": "watch stream open"}]
    assert "Last update 23 s ago" in body["reason"] and "pods" in body["reason"]
    strict = client.get("/readyz?fresh=true")
    assert strict.status_code == 503 and strict.json()["stale"][0]["resource"] == "pods"


def test_readyz_current(app_and_client):
    app, client = app_and_client
    app.state.svc.watchers.append(FakeWatcher("services", 1.0, False))
    for url in ("/readyz", "/readyz?fresh=true"):
        r = client.get(url)
        assert r.status_code == 200 and r.json()["current"] is True and r.json()["stale"] == []


def test_every_page_carries_the_banner_and_the_fragment_follows(app_and_client):
    app, client = app_and_client
    watcher = FakeWatcher("services", 3.0, False)
    app.state.svc.watchers.append(watcher)
    page = client.get("/")
    assert 'id="freshness"' in page.text and 'hx-get="/status/freshness"' in page.text
    assert "stale-banner" not in page.text
    watcher.age_s, watcher.stale = 31.0, True
    for url in ("/", "/status/freshness"):
        r = client.get(url)
        assert r.status_code == 200
        assert 'data-testid="stale-banner"' in r.text and "Last update 31 s ago." in r.text
    fragment = client.get("/status/freshness")
    assert "<html" not in fragment.text and fragment.headers["cache-control"] == "no-store"
    watcher.age_s, watcher.stale = 1.0, False
    assert "stale-banner" not in client.get("/status/freshness").text
