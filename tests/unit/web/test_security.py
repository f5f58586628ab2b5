"""The Host / Origin / CSRF gate in front of every route, and the hardening headers (app.web.security)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from app.web.security import (
    CONTENT_SECURITY_POLICY,
    CSRF_FIELD,
    Csrf,
    CsrfProblem,
    HeadersMiddleware,
    HostPolicy,
    SecurityMiddleware,
    cookie_name,
    csrf_token,
    host_without_port,
    same_origin,
)

SECRET = "test-secret"
NONCE = "n" * 22
T0 = 1_800_000_000.0


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"method": request.method, "body": body.decode()})


async def issue(request: Request) -> JSONResponse:
    return JSONResponse({"token": csrf_token(request)})


async def nothing(request: Request) -> JSONResponse:
    return JSONResponse({})


def make_client(**kwargs: Any) -> TestClient:
    app = Starlette(
        routes=[
            Route("/x", echo, methods=["GET", "POST"]),
            Route("/healthz", echo),
            Route("/token", issue),
            Route("/plain", nothing),
        ]
    )
    app.add_middleware(
        SecurityMiddleware, hosts=HostPolicy(["svcscope.example:8080"]), csrf=Csrf(SECRET, **kwargs)
    )
    app.add_middleware(HeadersMiddleware)
    return TestClient(app, base_url="http://localhost:8080")


@pytest.fixture
def client() -> TestClient:
    return make_client()


def fresh_token(client: TestClient) -> str:
    token: str = client.get("/token").json()["token"]
    return token


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


# -- same origin: scheme, host and port, exactly ------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "scheme", "host", "same"),
    [
        ("http://localhost:8080", "http", "localhost:8080", True),
        ("http://LOCALHOST:8080", "http", "localhost:8080", True),
        ("http://localhost:8080/some/page?x=1", "http", "localhost:8080", True),  # a Referer
        ("http://localhost", "http", "localhost", True),
        ("http://localhost:80", "http", "localhost", True),  # the default port, written or not
        ("http://localhost", "http", "localhost:80", True),
        ("http://[::1]:8080", "http", "[::1]:8080", True),
        ("http://localhost:9999", "http", "localhost:8080", False),  # another port on the same host
        ("https://127.0.0.1:1", "http", "localhost:8080", False),
        ("https://localhost:8080", "http", "localhost:8080", False),  # another scheme
        ("http://127.0.0.1:8080", "http", "localhost:8080", False),  # another host name
        ("http://localhost:8080", "http", "127.0.0.1:8080", False),
        ("http://localhost:8080", "http", None, False),
        ("http://localhost", "http", "localhost:8080", False),
        ("http://evil.example", "http", "localhost:8080", False),
        ("http://user@localhost:8080", "http", "localhost:8080", False),
        ("null", "http", "localhost:8080", False),  # sandboxed frames, file: pages
        ("", "http", "localhost:8080", False),
        ("http://localhost:99999", "http", "localhost:99999", False),  # not a port
        ("http://localhost:8080", "http", "localhost:8080/x", False),
        ("ftp://localhost:8080", "ftp", "localhost:8080", True),  # consistent, though never seen
        ("ftp://localhost", "ftp", "localhost", False),  # no default port to compare
    ],
)
def test_same_origin(origin: str, scheme: str, host: str | None, same: bool) -> None:
    assert same_origin(origin, scheme, host) is same


# -- tokens: bound to the cookie nonce, signed, expiring ----------------------------------------------


@pytest.mark.parametrize(
    ("nonce", "token", "now", "problem"),
    [
        (NONCE, "ok", T0, None),
        (NONCE, "ok", T0 + 12 * 3600 - 1, None),
        (NONCE, "ok", T0 + 12 * 3600 + 1, CsrfProblem.EXPIRED),
        (NONCE, "ok", T0 - 3600, CsrfProblem.EXPIRED),  # issued in the future
        ("m" * 22, "ok", T0, CsrfProblem.INVALID),  # another cookie: the token is not bound to it
        (None, "ok", T0, CsrfProblem.NO_COOKIE),
        (NONCE, None, T0, CsrfProblem.MISSING),
        (NONCE, "", T0, CsrfProblem.MISSING),
        (NONCE, "no-dot", T0, CsrfProblem.INVALID),
        (NONCE, f"{int(T0)}.", T0, CsrfProblem.INVALID),
        (NONCE, f"{int(T0)}.{'0' * 32}", T0, CsrfProblem.INVALID),
        (NONCE, "later-issued", T0, CsrfProblem.INVALID),  # a valid MAC with the issue time changed
        (NONCE, "other-secret", T0, CsrfProblem.INVALID),
    ],
)
def test_token_rules(nonce: str | None, token: str | None, now: float, problem: CsrfProblem | None) -> None:
    csrf = Csrf(SECRET, 12 * 3600)
    good = csrf.token(NONCE, now=T0)
    issued, mac = good.split(".")
    token = {
        "ok": good,
        "later-issued": f"{int(issued) + 3600}.{mac}",
        "other-secret": Csrf("other", 12 * 3600).token(NONCE, now=T0),
    }.get(token or "", token)
    assert csrf.check(nonce, token, now=now) is problem


def test_expired_message_tells_to_reload() -> None:
    csrf = Csrf(SECRET, 12 * 3600)
    assert csrf.message(CsrfProblem.EXPIRED) == (
        "CSRF token expired: the page is older than 12 h; reload the page and submit again"
    )
    for problem in CsrfProblem:  # the page's script renews its token on a 403 that says "CSRF token"
        assert "reload the page" in csrf.message(problem) and "CSRF token" in csrf.message(problem)


@pytest.mark.parametrize(
    ("host", "name"),
    [("localhost:8080", "svcscope_csrf_8080"), ("localhost", "svcscope_csrf_80"), (None, "svcscope_csrf")],
)
def test_cookie_name_carries_the_port(host: str | None, name: str) -> None:
    assert cookie_name(host) == name


# -- the middleware ---------------------------------------------------------------------------------


def test_foreign_host_refused_but_health_probe_by_ip_answered(client: TestClient) -> None:
    r = client.get("/x", headers={"host": "attacker.example"})
    assert r.status_code == 400 and "SVCSCOPE_ALLOWED_HOSTS" in r.json()["detail"]
    assert client.get("/healthz", headers={"host": "198.18.0.7:8080"}).status_code == 200
    assert client.post("/healthz", headers={"host": "198.18.0.7:8080"}, json={}).status_code == 400


def test_a_token_sets_the_cookie_once() -> None:
    client = make_client()
    first = client.get("/token")
    cookie = first.headers["set-cookie"]
    nonce = client.cookies["svcscope_csrf_8080"]
    assert cookie == f"svcscope_csrf_8080={nonce}; Path=/; HttpOnly; SameSite=Strict"
    again = client.get("/token")  # the cookie is kept: tokens of other tabs stay valid
    assert "set-cookie" not in again.headers and client.cookies["svcscope_csrf_8080"] == nonce
    assert "set-cookie" not in make_client().get("/plain").headers  # no token issued, no cookie


@pytest.mark.parametrize(
    ("kwargs", "status", "problem"),
    [
        ({"json": {"a": 1}}, 200, None),  # JSON cannot be sent cross-site without a preflight
        ({"json": {"a": 1}, "headers": {"origin": "http://localhost:8080"}}, 200, None),
        ({"json": {"a": 1}, "headers": {"origin": "http://attacker.example"}}, 403, None),
        ({"json": {"a": 1}, "headers": {"origin": "http://localhost:9999"}}, 403, None),
        ({"json": {"a": 1}, "headers": {"origin": "https://127.0.0.1:1"}}, 403, None),
        ({"json": {"a": 1}, "headers": {"origin": "https://localhost:8080"}}, 403, None),
        ({"json": {"a": 1}, "headers": {"origin": "null"}}, 403, None),
        ({"json": {"a": 1}, "headers": {"referer": "http://attacker.example/page"}}, 403, None),
        ({"json": {"a": 1}, "headers": {"referer": "http://localhost:9999/"}}, 403, None),
        ({"data": {"a": "1"}}, 403, "missing"),  # a form without a token
        ({"content": b"a=1", "headers": {"content-type": "text/plain"}}, 403, "missing"),
        ({"data": {"a": "1", CSRF_FIELD: "1.forged"}}, 403, "invalid"),
        ({"data": {"a": "1"}, "headers": {"x-csrf-token": "1.forged"}}, 403, "invalid"),
        ({"json": {"a": 1}, "headers": {"x-csrf-token": "1.forged"}}, 403, "invalid"),
    ],
)
def test_unsafe_requests(kwargs: dict[str, Any], status: int, problem: str | None) -> None:
    client = make_client()
    fresh_token(client)  # the client has the cookie: only the token decides
    r = client.post("/x", **kwargs)
    assert r.status_code == status
    if status == 403:
        body = r.json()
        assert body.get("csrf") == problem
        if problem is None:
            assert "cross-origin request refused" in body["detail"]
        else:
            assert "reload the page" in body["detail"] and body["renew"] == "/api/v1/csrf"
            assert r.headers["x-csrf-error"] == problem


def test_valid_token_in_header_or_form_and_body_is_not_lost(client: TestClient) -> None:
    token = fresh_token(client)
    r = client.post("/x", data={"count": "5"}, headers={"x-csrf-token": token})
    assert r.status_code == 200 and r.json()["body"] == "count=5"
    r = client.post("/x", data={"count": "7", CSRF_FIELD: token})
    assert r.status_code == 200 and "count=7" in r.json()["body"]  # replayed to the app intact
    r = client.post(
        "/x", data={"count": "8"}, headers={"x-csrf-token": token, "origin": "http://localhost:8080"}
    )
    assert r.status_code == 200


def test_token_without_its_cookie_or_with_another_is_refused(client: TestClient) -> None:
    token = fresh_token(client)
    other = make_client()
    r = other.post("/x", data={"a": "1"}, headers={"x-csrf-token": token})  # a stolen token, no cookie
    assert r.status_code == 403 and r.json()["csrf"] == "no-cookie"
    fresh_token(other)  # a cookie of its own
    r = other.post("/x", data={"a": "1"}, headers={"x-csrf-token": token})
    assert r.status_code == 403 and r.json()["csrf"] == "invalid"


def test_expired_token_refused_with_a_reload_message(monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_client(max_age_s=60)
    token = fresh_token(client)
    import time

    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 61)
    r = client.post("/x", data={"a": "1"}, headers={"x-csrf-token": token})
    assert r.status_code == 403 and r.json()["csrf"] == "expired"
    assert "expired" in r.json()["detail"] and "reload the page" in r.json()["detail"]
    renewed = fresh_token(client)
    assert client.post("/x", data={"a": "1"}, headers={"x-csrf-token": renewed}).status_code == 200


def test_oversized_form_refused(client: TestClient) -> None:
    fresh_token(client)
    r = client.post("/x", data={"a": "x" * 70_000})
    assert r.status_code == 413


@pytest.mark.parametrize("path", ["/x", "/healthz", "/nowhere", "/token"])
def test_hardening_headers_on_every_answer(client: TestClient, path: str) -> None:
    for r in (client.get(path), client.get(path, headers={"host": "attacker.example"})):
        assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "same-origin"


@pytest.mark.parametrize(
    "directive",
    [
        "default-src 'self'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "object-src 'none'",
    ],
)
def test_content_security_policy(directive: str) -> None:
    directives = [d.strip() for d in CONTENT_SECURITY_POLICY.split(";")]
    assert directive in directives
    script = next(d for d in directives if d.startswith("script-src"))
    assert "unsafe" not in script  # no inline script, no eval
    assert "style-src 'self'" in directives  # no inline style either: not even a style attribute
