"""Host allow-list, same-origin check, CSRF protection and the browser hardening headers.

A dashboard reached through ``kubectl port-forward`` listens on localhost: any web page the user
visits can make the browser send requests to it, and a DNS-rebinding page can even make them
look same-origin. The dashboard sends traffic inside the cluster on request, so:

* the Host header must be a loopback name (or a configured one), which defeats DNS rebinding;
* an unsafe request that carries an Origin (or, failing that, a Referer) must come from exactly the
  request's own origin: same scheme, host and port as the Host header (``http://localhost:9999``
  may not post to a dashboard at ``http://localhost:8080``);
* an unsafe request must prove it comes from our own page: a CSRF token in ``X-CSRF-Token`` or the
  ``csrf_token`` form field, double-submitted with a cookie — the token is an HMAC (process secret)
  over the cookie's random nonce and the token's issue time, so it is valid only next to that cookie
  and only for ``csrf_max_age_s`` — or a JSON body without a token (``Content-Type: application/json``
  cannot be sent cross-site without a CORS preflight, which we never answer).

The cookie is HttpOnly, SameSite=Strict, Path=/; its name carries the Host's port, so dashboards
port-forwarded to different local ports do not overwrite each other's cookie.

Long on purpose: the Host, Origin and CSRF checks and the response headers are the decisions of one
middleware, kept together so the order in which a request is judged reads from top to bottom.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSRF_COOKIE = "svcscope_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")
MAX_FORM_BYTES = 64 * 1024
# Read-only machine endpoints that kubelet probes and metric scrapers call by pod IP. They carry
# nothing a rebinding page could use to act, so the Host check does not apply to them.
HOST_EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
DEFAULT_PORTS = {"http": 80, "https": 443}
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_STATE_KEY = "svcscope_csrf"

# -- browser hardening: on every response (pages, fragments, JSON, static files, errors) -------------

# No inline script and no inline style anywhere: templates load /static/*.js and svcscope.css only, bar
# widths are classes, and htmx's indicator <style> is turned off (base.html). Swagger UI's page is the one
# exception for styles (see ``API_DOCS_CONTENT_SECURITY_POLICY``).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
# Swagger UI (/api/docs, the API's schema only, no cluster data) writes style attributes into its markup.
API_DOCS_CONTENT_SECURITY_POLICY = CONTENT_SECURITY_POLICY.replace(
    "style-src 'self'", "style-src 'self' 'unsafe-inline'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    # same-origin, not no-referrer: under no-referrer a browser sends "Origin: null" with a plain form post
    # (one without JavaScript), and the same-origin check must then refuse it; other origins still get
    # neither a referrer nor an origin from these pages.
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)


class HeadersMiddleware:
    """Adds :data:`SECURITY_HEADERS` to every HTTP response (a header the app set itself is kept)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# -- Host and Origin ---------------------------------------------------------------------------------


def host_without_port(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8080
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def _authority(netloc: str, scheme: str) -> tuple[str, int] | None:
    """``(host, port)`` of a Host header or an origin's netloc, the port defaulted by the scheme."""
    try:
        parts = urlsplit(f"//{netloc}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host or parts.username is not None or parts.password is not None or parts.path:
        return None
    if port is None:
        if scheme not in DEFAULT_PORTS:
            return None
        port = DEFAULT_PORTS[scheme]
    return host, port


def same_origin(origin: str, scheme: str, host_header: str | None) -> bool:
    """Whether ``origin`` (an Origin header, or a Referer URL) is exactly the request's own origin:
    the same scheme as the connection, and the same host and port as the Host header."""
    if host_header is None:
        return False
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return False
    if parts.scheme.lower() != scheme.lower() or not parts.netloc:
        return False
    theirs = _authority(parts.netloc, parts.scheme.lower())
    ours = _authority(host_header.strip(), scheme.lower())
    return theirs is not None and theirs == ours


class HostPolicy:
    """Which Host header values the dashboard answers to."""

    def __init__(self, extra_hosts: Iterable[str] = ()) -> None:
        self._allowed = {h.lower() for h in LOOPBACK_HOSTS} | {host_without_port(h) for h in extra_hosts}

    def allows(self, host_header: str | None) -> bool:
        return host_header is not None and host_without_port(host_header) in self._allowed


# -- CSRF tokens -------------------------------------------------------------------------------------


class CsrfProblem(enum.StrEnum):
    """Why a token was refused (also the ``csrf`` field of the 403 answer, for the page's script)."""

    MISSING = "missing"  # no token at all
    NO_COOKIE = "no-cookie"  # a token, but the cookie it is bound to is absent
    INVALID = "invalid"  # forged, from another cookie, or signed with another secret
    EXPIRED = "expired"  # older than csrf_max_age_s


CSRF_MESSAGES = {
    CsrfProblem.MISSING: "missing CSRF token: reload the page and submit again",
    CsrfProblem.NO_COOKIE: "CSRF token without its cookie: reload the page (it sets it) and submit again",
    CsrfProblem.INVALID: "invalid CSRF token: reload the page and submit again",
    CsrfProblem.EXPIRED: (
        "CSRF token expired: the page is older than {hours}; reload the page and submit again"
    ),
}


@dataclass(frozen=True, slots=True)
class Csrf:
    """Issues and checks tokens: ``"<issued unix seconds>.<HMAC-SHA256(secret, nonce.issued)[:32]>"``."""

    secret: str
    max_age_s: float = 12 * 3600.0

    def _mac(self, nonce: str, issued: int) -> str:
        msg = f"{nonce}.{issued}".encode()
        return hmac.new(self.secret.encode(), msg, hashlib.sha256).hexdigest()[:32]

    def token(self, nonce: str, now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        return f"{issued}.{self._mac(nonce, issued)}"

    def check(self, nonce: str | None, token: str | None, now: float | None = None) -> CsrfProblem | None:
        """None when ``token`` is valid next to the cookie ``nonce``; else why not."""
        if not token:
            return CsrfProblem.MISSING
        if not nonce:
            return CsrfProblem.NO_COOKIE
        issued_text, _, mac = token.partition(".")
        if not issued_text.isdigit() or len(issued_text) > 12 or not mac:
            return CsrfProblem.INVALID
        issued = int(issued_text)
        if not hmac.compare_digest(self._mac(nonce, issued), mac):
            return CsrfProblem.INVALID
        age = (time.time() if now is None else now) - issued
        if age > self.max_age_s or age < -300:  # 5 min of clock skew between processes
            return CsrfProblem.EXPIRED
        return None

    def message(self, problem: CsrfProblem) -> str:
        hours = self.max_age_s / 3600
        return CSRF_MESSAGES[problem].format(hours=f"{hours:g} h")


def cookie_name(host_header: str | None) -> str:
    """``svcscope_csrf_<port>``: cookies are per host, not per port, and each port is its own dashboard."""
    authority = _authority(host_header or "", "http") if host_header else None
    return f"{CSRF_COOKIE}_{authority[1]}" if authority else CSRF_COOKIE


def _cookie_nonce(headers: Headers, name: str) -> str | None:
    for header in headers.getlist("cookie"):
        for part in header.split(";"):
            key, _, value = part.strip().partition("=")
            if key == name and _NONCE.fullmatch(value):
                return value
    return None


@dataclass(slots=True)
class _Session:
    """Per request (in ``scope["state"]``): the cookie's nonce, or a new one set when a token is issued."""

    csrf: Csrf
    nonce: str
    new: bool
    issued: bool = False

    def issue(self) -> str:
        self.issued = True
        return self.csrf.token(self.nonce)


def csrf_token(request: Request) -> str:
    """A fresh token for this request's cookie (the response sets the cookie if the request had none)."""
    session = request.scope.get("state", {}).get(_STATE_KEY)
    if not isinstance(session, _Session):
        raise RuntimeError("SecurityMiddleware is not installed: no CSRF session on the request")
    return session.issue()


def _set_cookie(name: str, nonce: str) -> tuple[bytes, bytes]:
    return b"set-cookie", f"{name}={nonce}; Path=/; HttpOnly; SameSite=Strict".encode()


async def _plain(
    send: Send,
    status: int,
    text: str,
    extra: dict[str, Any] | None = None,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    body = json.dumps({"detail": text, **(extra or {})}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class SecurityMiddleware:
    """Pure ASGI middleware so it also guards SSE streams and static files."""

    def __init__(
        self, app: ASGIApp, *, hosts: HostPolicy, csrf: Csrf, max_form_bytes: int = MAX_FORM_BYTES
    ) -> None:
        self.app = app
        self.hosts = hosts
        self.csrf = csrf
        self.max_form_bytes = max_form_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host")
        exempt = scope["method"] in SAFE_METHODS and scope["path"] in HOST_EXEMPT_PATHS
        if not exempt and not self.hosts.allows(host):
            await _plain(
                send,
                400,
                "Host header not allowed: browse the dashboard via localhost "
                "(kubectl port-forward) or add the name to SVCSCOPE_ALLOWED_HOSTS",
            )
            return
        name = cookie_name(host)
        nonce = _cookie_nonce(headers, name)
        session = _Session(self.csrf, nonce or secrets.token_urlsafe(16), new=nonce is None)
        scope.setdefault("state", {})[_STATE_KEY] = session
        send = _cookie_setter(send, session, name)

        if scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return

        origin = headers.get("origin")
        if origin is None and (referer := headers.get("referer")):
            origin = referer
        if origin is not None and not same_origin(origin, scope.get("scheme", "http"), host):
            await _plain(
                send,
                403,
                f"cross-origin request refused: Origin {origin[:100]!r} is not this dashboard's own "
                "(scheme, host and port must match the address in the browser)",
            )
            return

        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        token = headers.get(CSRF_HEADER)
        if token is None and content_type == "application/json":
            await self.app(scope, receive, send)  # a JSON body cannot be sent cross-site without a preflight
            return
        if token is None and content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            # Read the form once to find the token, then replay the body to the app: nothing is lost.
            body, too_large = await _read_body(receive, self.max_form_bytes)
            if too_large:
                await _plain(send, 413, f"request body larger than {self.max_form_bytes} bytes")
                return
            if content_type == "application/x-www-form-urlencoded":
                values = parse_qs(body.decode("latin-1")).get(CSRF_FIELD)
                token = values[0] if values else None
            receive = _replay(body)
        problem = self.csrf.check(nonce, token)
        if problem is None:
            await self.app(scope, receive, send)
            return
        await _plain(
            send,
            403,
            self.csrf.message(problem),
            {"csrf": problem.value, "renew": "/api/v1/csrf"},
            [(b"x-csrf-error", problem.value.encode())],
        )


def _cookie_setter(send: Send, session: _Session, name: str) -> Send:
    """Sets the cookie on the response when this request issued a token for a new nonce."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start" and session.new and session.issued:
            message = {**message, "headers": [*message.get("headers", []), _set_cookie(name, session.nonce)]}
        await send(message)

    return wrapped


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), False


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive
