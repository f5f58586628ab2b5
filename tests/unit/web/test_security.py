"""The Host / Origin / CSRF gate in front of every route (app.web.security)."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from app.web.security import (
    CSRF_FIELD,
    HostPolicy,
    SecurityMiddleware,
    csrf_token_valid,
    host_without_port,
    make_csrf_token,
)

SECRET = "test-secret"


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"method": request.method, "body": body.decode()})


@pytest.fixture
def client() -> TestClient:
    app = Starlette(routes=[Route("/x", echo, methods=["GET", "POST"]), Route("/healthz", echo)])
    app.add_middleware(SecurityMiddleware, hosts=HostPolicy(["svcscope.example:8080"]), csrf_secret=SECRET)
    return TestClient(app, base_url="http://localhost:8080")


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost:8080", "localhost"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]:8080", "[::1]"),
        ("LOCALHOST", "localhost"),
        ("::1", "::1"),
    ],
)
def test_host_without_port(host: str, expected: str) -> None:
    assert host_without_port(host) == expected


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost:8080", True),
        ("127.0.0.1:9", True),
        ("[::1]:8080", True),
        ("svcscope.example", True),  # configured name, any port
        ("attacker.example", False),  # DNS rebinding: the browser sends the attacker's name
        ("localhost.attacker.example", False),
        ("", False),
        (None, False),
    ],
)
def test_host_policy(host: str | None, allowed: bool) -> None:
    assert HostPolicy(["svcscope.example"]).allows(host) is allowed


def test_token_round_trip_and_tampering() -> None:
    token = make_csrf_token(SECRET)
    assert csrf_token_valid(SECRET, token)
    nonce, mac = token.split(".")
    assert not csrf_token_valid(SECRET, f"{nonce}x.{mac}")
    assert not csrf_token_valid("other-secret", token)
    assert not csrf_token_valid(SECRET, None)
    assert not csrf_token_valid(SECRET, "no-dot")


def test_foreign_host_refused_but_health_probe_by_ip_answered(client: TestClient) -> None:
    r = client.get("/x", headers={"host": "attacker.example"})
    assert r.status_code == 400 and "SVCSCOPE_ALLOWED_HOSTS" in r.json()["detail"]
    assert client.get("/healthz", headers={"host": "198.18.0.7:8080"}).status_code == 200
    assert client.post("/healthz", headers={"host": "198.18.0.7:8080"}, json={}).status_code == 400


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"json": {"a": 1}}, 200),  # JSON cannot be sent cross-site without a preflight
        ({"json": {"a": 1}, "headers": {"origin": "http://localhost:8080"}}, 200),
        ({"json": {"a": 1}, "headers": {"origin": "http://attacker.example"}}, 403),
        ({"json": {"a": 1}, "headers": {"referer": "http://attacker.example/page"}}, 403),
        ({"data": {"a": "1"}}, 403),  # a form without a token
        ({"content": b"a=1", "headers": {"content-type": "text/plain"}}, 403),
        ({"data": {"a": "1", CSRF_FIELD: "forged.token"}}, 403),
        ({"data": {"a": "1"}, "headers": {"x-csrf-token": "forged.token"}}, 403),
        ({"json": {"a": 1}, "headers": {"x-csrf-token": "forged.token"}}, 403),
    ],
)
def test_unsafe_requests(client: TestClient, kwargs: dict[str, object], status: int) -> None:
    assert client.post("/x", **kwargs).status_code == status  # type: ignore[arg-type]


def test_valid_token_in_header_or_form_and_body_is_not_lost(client: TestClient) -> None:
    token = make_csrf_token(SECRET)
    r = client.post("/x", data={"count": "5"}, headers={"x-csrf-token": token})
    assert r.status_code == 200 and r.json()["body"] == "count=5"
    r = client.post("/x", data={"count": "7", CSRF_FIELD: token})
    assert r.status_code == 200 and "count=7" in r.json()["body"]  # replayed to the app intact


def test_oversized_form_refused(client: TestClient) -> None:
    r = client.post("/x", data={"a": "x" * 70_000})
    assert r.status_code == 413
