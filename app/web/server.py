"""The HTTP server protocol: uvicorn's h11 protocol with a lingering close and a clear 414 / 431.

Run with ``uvicorn --http app.web.server:LingeringH11Protocol`` (the image and the chart do).

Why: the dashboard is reached through ``kubectl port-forward``. When the server closes a connection
while request bytes are still unread in its socket (stock uvicorn answers a request head above h11's
16 KiB buffer with 400 and closes at once), the kernel resets the connection (RST). The forwarder in
the pod's network namespace reads ``connection reset by peer``, reports an error on the port-forward
stream, and ``kubectl port-forward`` exits with "lost connection to pod": one ``<img src>`` with a long
URL on any web page takes the user's tunnel down.

So here every close is a *lingering* close (as Apache's ``lingering_close``): the response is flushed,
the write side shut (FIN), and whatever the client still sends is read and dropped until it closes its
side (the forwarder does as soon as the browser or kubectl does), it has been quiet for
:data:`LINGER_IDLE_S`, or :data:`LINGER_MAX_S` have passed. Nothing read while lingering is buffered.

A request head above :data:`HEAD_LIMIT` (far above the app's own ``max_url_bytes`` /
``max_header_bytes``, which answer 414 / 431 on a connection that stays open) gets 414 (the request
line alone is that long) or 431, as JSON with the browser hardening headers, then the lingering close.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, cast

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from app.web.security import SECURITY_HEADERS

HEAD_LIMIT = 64 * 1024  # request line + headers that h11 buffers before giving up on a request
LINGER_IDLE_S = 2.0
LINGER_MAX_S = 30.0


class _LingeringTransport:
    """The connection's transport as uvicorn sees it: ``close()`` starts the protocol's lingering close."""

    def __init__(self, transport: asyncio.Transport, protocol: LingeringH11Protocol) -> None:
        self._transport = transport
        self._protocol = protocol

    def close(self) -> None:
        self._protocol.linger()

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._transport.is_closing()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.is_closing():
            self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _head_too_large(buffered: bytes) -> tuple[int, str]:
    if b"\n" not in buffered:
        return 414, f"URL too long: the request line passed {HEAD_LIMIT} bytes"
    return 431, f"request headers too large: the request head passed {HEAD_LIMIT} bytes"


class LingeringH11Protocol(H11Protocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        if config.h11_max_incomplete_event_size is None:  # --h11-max-incomplete-event-size still wins
            self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_LIMIT)
        self.head_limit = config.h11_max_incomplete_event_size or HEAD_LIMIT
        self.lingering = False
        self.discarded = 0
        self._raw: asyncio.Transport | None = None
        self._linger_started = 0.0
        self._last_data = 0.0
        self._linger_timer: asyncio.TimerHandle | None = None

    # -- transport plumbing

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._raw = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        super().connection_made(_LingeringTransport(transport, self))  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            self.discarded += len(data)
            self._last_data = time.monotonic()
            return
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        super().connection_lost(exc)

    # -- the lingering close

    def linger(self) -> None:
        raw = self._raw
        if raw is None or self.lingering or raw.is_closing():
            return
        self.lingering = True
        self._unset_keepalive_if_required()
        if not raw.can_write_eof():
            raw.close()
            return
        raw.write_eof()  # after what is buffered: the response goes out whole, then FIN
        try:
            raw.resume_reading()  # flow control may have paused it; the rest must be read to be dropped
        except RuntimeError:  # pragma: no cover - transports that refuse when not paused
            pass
        self._linger_started = self._last_data = time.monotonic()
        self._linger_timer = self.loop.call_later(LINGER_IDLE_S, self._linger_check)

    def _linger_check(self) -> None:
        self._linger_timer = None
        raw = self._raw
        if raw is None or raw.is_closing():
            return
        now = time.monotonic()
        if now - self._last_data >= LINGER_IDLE_S or now - self._linger_started >= LINGER_MAX_S:
            raw.close()
            return
        wait = min(LINGER_IDLE_S - (now - self._last_data), LINGER_MAX_S - (now - self._linger_started))
        self._linger_timer = self.loop.call_later(max(wait, 0.05), self._linger_check)

    # -- a request head h11 would not buffer

    def send_400_response(self, msg: str) -> None:
        buffered, _ = self.conn.trailing_data
        if len(buffered) > self.head_limit:
            status, detail = _head_too_large(buffered)
        else:
            status, detail = 400, f"malformed HTTP request ({msg.rstrip('.')})"
        self.logger.warning("refused a request: %s", detail)
        body = json.dumps({"detail": detail}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            *SECURITY_HEADERS,
            (b"connection", b"close"),
        ]
        events = (h11.Response(status_code=status, headers=headers), h11.Data(data=body), h11.EndOfMessage())
        try:
            output = b"".join(self.conn.send(event) or b"" for event in events)
        except h11.LocalProtocolError:  # a response had already started: nothing more can be said
            output = b""
        if output:
            self.transport.write(output)
        self.transport.close()
        # (The base class' eof_received returns None: once the client closes its side, the transport
        # closes, which ends the lingering close early.)
