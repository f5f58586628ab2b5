"""Host allow-list, Origin check and CSRF protection.

A dashboard reached through ``kubectl port-forward`` listens on localhost: any web page the user
visits can make the browser send requests to it, and a DNS-rebinding page can even make them
look same-origin. The dashboard sends traffic inside the cluster on request, so:

* the Host header must be a loopback name (or a configured one), which defeats DNS rebinding;
* an unsafe request that carries an Origin (or, failing that, a Referer) must come from an allowed
  host — cross-site forms and fetches are refused;
* an unsafe request must prove it comes from our own page: either a CSRF token (double-submit
  cookie, HMAC-bound to the process secret) in ``X-CSRF-Token`` or the ``csrf_token`` form field,
  or a JSON body (``Content-Type: application/json`` cannot be sent cross-site without a CORS
  preflight, which we never answer).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import Headers
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


def host_without_port(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8080
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


class HostPolicy:
    """Which Host header values (and so which Origins) the dashboard answers to."""

    def __init__(self, extra_hosts: Iterable[str] = ()) -> None:
        self._allowed = {h.lower() for h in LOOPBACK_HOSTS} | {host_without_port(h) for h in extra_hosts}

    def allows(self, host_header: str | None) -> bool:
        return host_header is not None and host_without_port(host_header) in self._allowed

    def allows_origin(self, origin: str) -> bool:
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc != "" and self.allows(parts.netloc)


def make_csrf_token(secret: str, nonce: str | None = None) -> str:
    nonce = nonce or secrets.token_urlsafe(16)
    mac = hmac.new(secret.encode(), nonce.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{nonce}.{mac}"


def csrf_token_valid(secret: str, token: str | None) -> bool:
    if not token or "." not in token:
        return False
    nonce, _ = token.split(".", 1)
    return hmac.compare_digest(make_csrf_token(secret, nonce), token)


async def _plain(send: Send, status: int, text: str) -> None:
    body = json.dumps({"detail": text}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class SecurityMiddleware:
    """Pure ASGI middleware so it also guards SSE streams and static files."""

    def __init__(self, app: ASGIApp, *, hosts: HostPolicy, csrf_secret: str) -> None:
        self.app = app
        self.hosts = hosts
        self.secret = csrf_secret

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        exempt = scope["method"] in SAFE_METHODS and scope["path"] in HOST_EXEMPT_PATHS
        if not exempt and not self.hosts.allows(headers.get("host")):
            await _plain(
                send,
                400,
                "Host header not allowed: browse the dashboard via localhost "
                "(kubectl port-forward) or add the name to SVCSCOPE_ALLOWED_HOSTS",
            )
            return
        if scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return

        origin = headers.get("origin")
        if origin is None and (referer := headers.get("referer")):
            origin = referer
        if origin is not None and not self.hosts.allows_origin(origin):
            await _plain(send, 403, f"cross-origin request refused (Origin {origin[:100]!r})")
            return

        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        token = headers.get(CSRF_HEADER)
        if csrf_token_valid(self.secret, token) or (token is None and content_type == "application/json"):
            await self.app(scope, receive, send)
            return
        if content_type in ("application/x-www-form-urlencoded", "multipart/form-data") and token is None:
            # Read the form once to find the token, then replay the body to the app: nothing is lost.
            body, too_large = await _read_body(receive, MAX_FORM_BYTES)
            if too_large:
                await _plain(send, 413, f"form body larger than {MAX_FORM_BYTES} bytes")
                return
            field = None
            if content_type == "application/x-www-form-urlencoded":
                values = parse_qs(body.decode("latin-1")).get(CSRF_FIELD)
                field = values[0] if values else None
            if csrf_token_valid(self.secret, field):
                await self.app(scope, _replay(body), send)
                return
        await _plain(send, 403, "missing or invalid CSRF token: reload the page and submit again")


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
