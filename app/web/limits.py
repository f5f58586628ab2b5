"""Bounds on what one request may cost, enforced before anything parses it (pure ASGI middleware).

* the URL (path and query) and the headers: 414 / 431 with a message. The HTTP server's own ceiling
  on a request head (``app.web.server``) is above these, so requests between the two get this
  ordinary answer on a connection that stays open (and ``kubectl port-forward`` stays up);
* every request body, JSON and form alike: a ``Content-Length`` above the cap is refused at once,
  without reading a byte of the body; a chunked body is counted as it streams, and refused as soon
  as it passes the cap. Nothing above the cap is ever buffered;
* live streams (SSE): at most ``sse_max_streams`` at once (503) and ``sse_max_streams_per_client``
  per client address (429). :class:`StreamSlots` counts every kind of stream, for the
  ``svcscope_sse_clients`` gauge too.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


def json_response_messages(
    status: int, detail: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> tuple[Message, Message]:
    body = json.dumps({"detail": detail}).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            *headers,
        ],
    }
    return start, {"type": "http.response.body", "body": body, "more_body": False}


async def _answer(
    send: Send, status: int, detail: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    start, body = json_response_messages(status, detail, headers)
    await send(start)
    await send(body)


class BodyTooLarge(Exception):
    """Raised by the wrapped ``receive`` once a streamed body passes the cap."""


@dataclass(frozen=True, slots=True)
class RequestLimits:
    max_body_bytes: int = 64 * 1024
    max_url_bytes: int = 8 * 1024
    max_header_bytes: int = 32 * 1024


def url_bytes(scope: Scope) -> int:
    path = scope.get("raw_path") or scope.get("path", "").encode()
    query = scope.get("query_string", b"")
    return len(path) + (len(query) + 1 if query else 0)


def header_bytes(scope: Scope) -> int:
    """Header names and values, plus ``": "`` and CRLF per header: what they take on the wire."""
    return sum(len(name) + len(value) + 4 for name, value in scope.get("headers", ()))


def content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.strip().isdigit() else None
    return None


class LimitsMiddleware:
    def __init__(self, app: ASGIApp, *, limits: RequestLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        lim = self.limits
        if (size := url_bytes(scope)) > lim.max_url_bytes:
            await _answer(send, 414, f"URL too long: {size} bytes, at most {lim.max_url_bytes}")
            return
        if (size := header_bytes(scope)) > lim.max_header_bytes:
            await _answer(
                send, 431, f"request headers too large: {size} bytes, at most {lim.max_header_bytes}"
            )
            return
        length = content_length(scope)
        too_large = f"request body too large: at most {lim.max_body_bytes} bytes"
        if length is not None and length > lim.max_body_bytes:
            await _answer(send, 413, f"{too_large} (Content-Length {length})")
            return

        received = 0
        overflow = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, overflow
            if overflow:
                raise BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > lim.max_body_bytes:
                    overflow = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if overflow:
                # Whatever the app answers to the interrupted body (a 400 about a broken body), the
                # client gets the one true reason.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _answer(send, 413, too_large)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except BodyTooLarge:
            if not started:
                started = True
                await _answer(send, 413, too_large)


# -- live streams ------------------------------------------------------------------------------------


def is_stream_path(path: str) -> bool:
    """The SSE routes: ``/streams/...`` (lists, Service pages, their runs), ``/runs/{id}/stream`` and
    ``/fanouts/{id}/stream``."""
    live = path.startswith(("/runs/", "/fanouts/")) and path.endswith("/stream")
    return path.startswith("/streams/") or live


@dataclass
class StreamSlots:
    """How many streams are open, in all and per client address, and the caps."""

    max_total: int = 64
    max_per_client: int = 32
    per_client: Counter[str] = field(default_factory=Counter)
    open: int = 0

    def refusal(self, client: str) -> tuple[int, str] | None:
        if self.open >= self.max_total:
            return 503, (
                f"too many live streams: the dashboard serves at most {self.max_total} at once "
                "(SVCSCOPE_SSE_MAX_STREAMS); close other dashboard tabs or retry later"
            )
        if self.per_client[client] >= self.max_per_client:
            return 429, (
                f"too many live streams from {client}: at most {self.max_per_client} per client "
                "(SVCSCOPE_SSE_MAX_STREAMS_PER_CLIENT); close other dashboard tabs"
            )
        return None

    def acquire(self, client: str) -> None:
        self.open += 1
        self.per_client[client] += 1

    def release(self, client: str) -> None:
        self.open -= 1
        self.per_client[client] -= 1
        if self.per_client[client] <= 0:
            del self.per_client[client]


class StreamLimitMiddleware:
    def __init__(self, app: ASGIApp, *, slots: StreamSlots) -> None:
        self.app = app
        self.slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_stream_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        client = scope["client"][0] if scope.get("client") else "unknown"
        refusal = self.slots.refusal(client)
        if refusal is not None:
            status, detail = refusal
            await _answer(send, status, detail, ((b"retry-after", b"10"),))
            return
        self.slots.acquire(client)
        try:
            await self.app(scope, receive, send)
        except BaseExceptionGroup as group:
            # A viewer that goes away while FastAPI's SSE keep-alive task is handing on an event: the
            # response closes the stream that task writes to, and the task group reports the write as
            # BrokenResourceError. The viewer left; there is nothing to answer and nothing to log.
            _, rest = group.split((anyio.BrokenResourceError, anyio.ClosedResourceError))
            if rest is not None:
                raise rest from None
            log.debug("stream %s: the viewer went away mid-event", scope["path"])
        finally:
            self.slots.release(client)
