"""Flipping session affinity: the pure change, the JSON and form endpoints with a fake actions object."""

from __future__ import annotations

import html
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.kube import convert
from app.kube.actions import ActionError, AffinityChange, RecordedChange, Refusal
from app.main import create_app
from app.web.security import make_csrf_token
from tests.unit.kube.objects import demo_cache, svc

SECRET = "test"
API = "/api/v1/services/shop/db/session-affinity"
FORM = "/services/shop/db/session-affinity"


class FakeActions:
    def __init__(self, error: ActionError | None = None, event_error: ActionError | None = None) -> None:
        self.error = error
        self.event_error = event_error
        self.calls: list[tuple[str, str, AffinityChange]] = []
        self.events: list[tuple[str, str, str | None, RecordedChange]] = []

    async def patch_session_affinity(self, namespace: str, name: str, change: AffinityChange) -> None:
        self.calls.append((namespace, name, change))
        if self.error is not None:
            raise self.error

    async def record_affinity_change(
        self, namespace: str, name: str, uid: str | None, change: RecordedChange
    ) -> None:
        if self.event_error is not None:
            raise self.event_error
        self.events.append((namespace, name, uid, change))


def make_client(
    enabled: bool = True, actions: Any = None, writable: tuple[str, ...] = ("shop", "kube-system", "default")
) -> Iterator[tuple[TestClient, FakeActions]]:
    fake = actions if actions is not None else FakeActions()
    settings = Settings(csrf_secret=SECRET, allow_affinity_patch=enabled, writable_namespaces=list(writable))
    cache = demo_cache()
    for name, ns, ip in (("kube-dns", "kube-system", "198.19.0.10"), ("kubernetes", "default", "198.19.0.1")):
        cache.upsert_service(convert.service_from_api(svc(name, ns, ip=ip, selector={"app": name})))
    app = create_app(settings, cache=cache, start_watchers=False)
    app.state.svc.actions = fake  # set before startup: the lifespan then builds no real client
    with TestClient(app, base_url="http://localhost") as c:
        yield c, fake


@pytest.fixture
def client() -> Iterator[tuple[TestClient, FakeActions]]:
    yield from make_client()


# -- the pure change


@pytest.mark.parametrize(
    ("affinity", "timeout", "patch"),
    [
        (
            "ClientIP",
            60,
            {"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}},
        ),
        (
            "ClientIP",
            None,
            {"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}}},
        ),
        ("None", None, {"sessionAffinity": "None", "sessionAffinityConfig": None}),
    ],
)
def test_patch_body(affinity: str, timeout: int | None, patch: dict[str, Any]) -> None:
    assert AffinityChange(affinity, timeout).patch() == {"spec": patch}


@pytest.mark.parametrize(
    ("affinity", "timeout", "message"),
    [
        ("Sticky", None, "one of None, ClientIP"),
        ("ClientIP", 0, "between 1 and 86400"),
        ("ClientIP", 86_401, "between 1 and 86400"),
        ("None", 60, "only to ClientIP"),
    ],
)
def test_invalid_change(affinity: str, timeout: int | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AffinityChange(affinity, timeout)


@pytest.mark.parametrize(
    ("affinity", "timeout", "expected"),
    [
        ("ClientIP", "120", AffinityChange("ClientIP", 120)),
        ("ClientIP", " ", AffinityChange("ClientIP")),
        ("None", "120", AffinityChange("None")),
    ],
)
def test_parse_form_values(affinity: str, timeout: str, expected: AffinityChange) -> None:
    assert AffinityChange.parse(affinity, timeout) == expected


def test_parse_rejects_non_numbers() -> None:
    with pytest.raises(ValueError, match="whole number"):
        AffinityChange.parse("ClientIP", "1e3")


# -- JSON API


def test_api_patches_a_watched_service(client: tuple[TestClient, FakeActions]) -> None:
    c, fake = client
    r = c.post(API, json={"session_affinity": "ClientIP", "timeout_s": 30})
    assert r.status_code == 200, r.text
    assert r.json()["session_affinity"] == "ClientIP" and "new connections" in r.json()["note"]
    assert fake.calls == [("shop", "db", AffinityChange("ClientIP", 30))]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        (API, {"session_affinity": "Sticky"}, 422, "session_affinity"),
        (API, {"session_affinity": "ClientIP", "timeout_s": 0}, 422, "timeout_s"),
        (API, {"session_affinity": "ClientIP", "timeout_s": 86_401}, 422, "timeout_s"),
        (API, {"session_affinity": "None", "timeout_s": 5}, 422, "only to ClientIP"),
        (API, {"session_affinity": "None", "extra": 1}, 422, "extra"),
        ("/api/v1/services/shop/nope/session-affinity", {"session_affinity": "None"}, 404, "not among"),
        ("/api/v1/services/other/db/session-affinity", {"session_affinity": "None"}, 404, "not among"),
        ("/api/v1/services/shop/peers/session-affinity", {"session_affinity": "None"}, 422, "no virtual IP"),
        ("/api/v1/services/shop/ext/session-affinity", {"session_affinity": "None"}, 422, "no virtual IP"),
        ("/api/v1/services/Shop!/db/session-affinity", {"session_affinity": "None"}, 422, "namespace"),
    ],
)
def test_api_refusals(
    client: tuple[TestClient, FakeActions], path: str, body: dict[str, Any], status: int, message: str
) -> None:
    c, fake = client
    r = c.post(path, json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    assert fake.calls == []


def test_api_off_by_default_is_403_with_the_way_to_enable() -> None:
    for c, fake in make_client(enabled=False):
        r = c.post(API, json={"session_affinity": "ClientIP"})
        assert r.status_code == 403
        assert (
            "SVCSCOPE_ALLOW_AFFINITY_PATCH" in r.json()["detail"]
            and "rbac.patchServices" in r.json()["detail"]
        )
        assert fake.calls == []


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ActionError("the dashboard's ServiceAccount may not patch Service shop/db", Refusal.FORBIDDEN), 403),
        (ActionError("Service shop/db: not found", Refusal.NOT_FOUND), 404),
        (ActionError("the apiserver did not answer within 10 s"), 502),
    ],
)
def test_api_action_errors_keep_their_status(error: ActionError, status: int) -> None:
    for c, _ in make_client(actions=FakeActions(error)):
        r = c.post(API, json={"session_affinity": "ClientIP"})
        assert r.status_code == status and r.json()["detail"] == error.message


def test_api_without_a_write_client_is_503() -> None:
    for c, _ in make_client():
        c.app.state.svc.actions = None  # type: ignore[attr-defined]
        assert c.post(API, json={"session_affinity": "ClientIP"}).status_code == 503


# -- form and page


def test_form_needs_csrf(client: tuple[TestClient, FakeActions]) -> None:
    c, fake = client
    r = c.post(FORM, data={"session_affinity": "ClientIP"})
    assert r.status_code == 403 and fake.calls == []


def test_htmx_form_shows_the_result_in_place(client: tuple[TestClient, FakeActions]) -> None:
    c, fake = client
    token = make_csrf_token(SECRET)
    hx = {"HX-Request": "true"}
    r = c.post(
        FORM,
        data={"csrf_token": token, "session_affinity": "ClientIP", "timeout_s": "90", "confirm": "yes"},
        headers=hx,
    )
    assert r.status_code == 200 and 'data-status="200"' in r.text
    assert "timeout 90 s" in r.text and "new connections" in r.text
    assert fake.calls == [("shop", "db", AffinityChange("ClientIP", 90))]
    # The whole panel comes back: the new value is current, the change is listed.
    assert 'id="affinity"' in r.text and "Current: <code>ClientIP</code>, timeout 90 s" in r.text
    assert "None → ClientIP (90 s)" in r.text and "testclient" in r.text
    r = c.post(FORM, data={"csrf_token": token, "session_affinity": "ClientIP", "timeout_s": "0"}, headers=hx)
    assert r.headers["X-Affinity-Status"] == "422" and "between 1 and 86400" in r.text
    r = c.post(FORM, data={"csrf_token": token, "session_affinity": "<b>x</b>"}, headers=hx)
    assert "<b>x</b>" not in r.text and 'data-status="422"' in r.text
    assert len(fake.calls) == 1


def test_plain_form_redirects_to_the_service(client: tuple[TestClient, FakeActions]) -> None:
    c, fake = client
    data = {"csrf_token": make_csrf_token(SECRET), "session_affinity": "ClientIP", "confirm": "yes"}
    r = c.post(FORM, data=data, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/services/shop/db"
    assert fake.calls == [("shop", "db", AffinityChange("ClientIP"))]


def test_service_page_shows_the_form_only_when_enabled(client: tuple[TestClient, FakeActions]) -> None:
    c, _ = client
    page = c.get("/services/shop/web").text
    assert 'data-testid="affinity-form"' in page and 'data-affinity="ClientIP"' in page
    assert 'value="60"' in page  # the current timeout
    # The current value is shown and preselected, and the form cannot be sent without the confirmation.
    assert "Current: <code>ClientIP</code>, timeout 60 s" in page
    assert '<option value="ClientIP" selected>ClientIP (current)</option>' in page
    assert 'name="confirm" value="yes" required' in page
    assert "<em>new</em> connections" in page and "per client IP" in page
    for c2, _ in make_client(enabled=False):
        page = c2.get("/services/shop/web").text
        assert 'data-testid="affinity-form"' not in page
        assert 'data-testid="affinity-hint"' in page and "rbac.patchServices=true" in page


def test_form_without_confirmation_changes_nothing(client: tuple[TestClient, FakeActions]) -> None:
    c, fake = client
    data = {"csrf_token": make_csrf_token(SECRET), "session_affinity": "ClientIP"}
    r = c.post(FORM, data=data, follow_redirects=False)
    assert r.status_code == 422 and "confirm the change" in r.text
    r = c.post(FORM, data=data, headers={"HX-Request": "true"})
    assert r.headers["X-Affinity-Status"] == "422" and "confirm the change" in r.text
    assert fake.calls == []


def test_the_current_value_is_no_change(client: tuple[TestClient, FakeActions]) -> None:
    c, fake = client
    r = c.post(API, json={"session_affinity": "None"})
    assert r.status_code == 422 and "already has sessionAffinity None" in r.json()["detail"]
    assert fake.calls == []


def test_each_change_is_an_event_and_listed_on_the_page(client: tuple[TestClient, FakeActions]) -> None:
    c, fake = client
    assert c.post(API, json={"session_affinity": "ClientIP", "timeout_s": 30}).status_code == 200
    ((ns, name, uid, change),) = fake.events
    assert (ns, name, uid) == ("shop", "db", "uid-shop-db")
    assert (change.old, change.new, change.client) == ("None", "ClientIP (30 s)", "testclient")
    page = c.get("/services/shop/db").text
    assert 'data-testid="affinity-changes"' in page and "None → ClientIP (30 s)" in page


def test_a_change_without_its_event_says_so() -> None:
    refused = ActionError("the dashboard's ServiceAccount may not create events in shop", Refusal.FORBIDDEN)
    for c, fake in make_client(actions=FakeActions(event_error=refused)):
        r = c.post(API, json={"session_affinity": "ClientIP"})
        assert r.status_code == 200 and "not recorded as an Event" in r.json()["note"]
        assert "may not create events in shop" in r.json()["note"] and len(fake.calls) == 1


@pytest.mark.parametrize(
    ("writable", "path", "words"),
    [
        (("shop", "kube-system"), "/services/kube-system/kube-dns", "one of the cluster's own namespaces"),
        (("shop", "default"), "/services/default/kubernetes", "the apiserver's own Service"),
        ((), "/services/shop/db", "namespace shop is not writable"),
    ],
)
def test_refused_namespaces_show_the_reason_instead_of_the_form(
    writable: tuple[str, ...], path: str, words: str
) -> None:
    """Even with the patch on and the namespace listed, the cluster's own Services are never changed."""
    for c, fake in make_client(writable=writable):
        page = c.get(path)
        assert page.status_code == 200 and 'data-testid="affinity-form"' not in page.text
        assert 'data-testid="affinity-refused"' in page.text and words in html.unescape(page.text)
        r = c.post(f"/api/v1{path}/session-affinity", json={"session_affinity": "ClientIP"})
        assert r.status_code == 403 and words in r.json()["detail"] and fake.calls == []
