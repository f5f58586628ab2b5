"""A small, strict HTTP/1.1 client plus TCP and UDP probes over asyncio (no redirects, capped reads).

Own client instead of a library: we decide exactly when a connection is opened and reused (the
whole point of the probe), a 3xx is reported and never followed, and a reply is read only up to
a small cap.

Longer than most modules on purpose: the HTTP reader (head, chunked and sized bodies, caps) and the
three transports share one buffered stream protocol and one error classification, and splitting them
would put the hot path of every probe behind another module boundary.
"""

from __future__ import annotations

import asyncio
import errno
import re
from dataclasses import dataclass
from typing import cast

from app.probe.attribution import Reply

BODY_CAP = 16_384
HEADER_CAP = 16_384
MAX_HEADERS = 100
BANNER_WAIT_S = 0.3
USER_AGENT = "svcscope-probe/0.1"
PATH_MAX = 512
_PATH_RE = re.compile(r"/[\x21-\x7e]*")


class ProbeFailure(Exception):
    """A request that got no usable reply; ``kind`` is the error class shown to the user."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


def validate_path(path: str) -> str:
    """An origin-form request target: starts with '/', printable ASCII, no scheme or host, capped."""
    if len(path) > PATH_MAX:
        raise ValueError(f"path longer than {PATH_MAX} characters")
    if not path.startswith("/") or path.startswith("//"):
        raise ValueError("path must start with a single '/' (no scheme, no host)")
    if not _PATH_RE.fullmatch(path):
        raise ValueError("path may contain only printable ASCII without spaces")
    if "#" in path:
        raise ValueError("path must not contain a fragment ('#')")
    return path


def classify(exc: BaseException) -> ProbeFailure:
    if isinstance(exc, ProbeFailure):
        return exc
    if isinstance(exc, TimeoutError):
        return ProbeFailure("timeout")
    if isinstance(exc, ConnectionRefusedError):
        return ProbeFailure("refused")
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return ProbeFailure("reset")
    if isinstance(exc, asyncio.IncompleteReadError):
        return ProbeFailure("closed", "connection closed before a complete reply")
    if isinstance(exc, OSError):
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return ProbeFailure("unreachable", exc.strerror or "")
        if exc.errno == errno.ECONNREFUSED:
            return ProbeFailure("refused")
        if exc.errno in (errno.ECONNRESET, errno.EPIPE):
            return ProbeFailure("reset")
        if exc.errno == errno.ETIMEDOUT:
            return ProbeFailure("timeout")
        return ProbeFailure("os_error", exc.strerror or str(exc))
    return ProbeFailure("error", type(exc).__name__)


class _Stream(asyncio.Protocol):
    """The receiving side of one TCP connection: a byte buffer read with awaits.

    A small stand-in for asyncio's StreamReader/StreamWriter pair, which add a layer of futures, a drain
    and a second buffer per request (bench/engine_local.py: a few per cent of a probe's CPU on asyncio's
    loop, more on uvloop, where the loop itself is cheap). Same exceptions (``IncompleteReadError``,
    ``LimitOverrunError``); reading pauses while more than ``2 * limit`` bytes are buffered, so a peer that
    floods us never grows memory past that.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.eof = False
        self.error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    # -- protocol callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self._paused and len(self.buffer) > 2 * self.limit and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close our side too: nothing more is sent once the reply is being read

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if exc is not None:
            self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def _more(self) -> None:
        """Wait for more bytes (or EOF); raises the connection's error once the buffer has none left."""
        if self.error is not None:
            raise self.error
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None

    def _incomplete(self, expected: int | None) -> BaseException:
        """At EOF without what was asked for: the connection's error (a reset), else a short read."""
        if self.error is not None:
            return self.error
        partial = bytes(self.buffer)
        self.buffer.clear()
        return asyncio.IncompleteReadError(partial, expected)

    # -- reads
    async def readuntil(self, separator: bytes) -> bytes:
        start = 0
        while True:
            i = self.buffer.find(separator, start)
            if i >= 0:
                end = i + len(separator)
                if end > self.limit:
                    raise asyncio.LimitOverrunError("separator found past the limit", i)
                data = bytes(self.buffer[:end])
                del self.buffer[:end]
                return data
            if len(self.buffer) > self.limit:
                raise asyncio.LimitOverrunError("no separator within the limit", len(self.buffer))
            if self.eof:
                raise self._incomplete(None)
            start = max(0, len(self.buffer) - len(separator) + 1)
            await self._more()

    async def readline(self) -> bytes:
        """Up to and including b"\\n", or what is left at EOF (b"" when nothing)."""
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return exc.partial
        except asyncio.LimitOverrunError as exc:
            raise ValueError("line longer than the limit") from exc  # as StreamReader.readline

    async def readexactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if self.eof:
                raise self._incomplete(n)
            await self._more()
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes, b"" at EOF."""
        while not self.buffer:
            if self.eof:
                if self.error is not None:
                    raise self.error
                return b""
            await self._more()
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data


@dataclass(slots=True)
class Connection:
    stream: _Stream
    transport: asyncio.Transport
    ident: int
    reusable: bool = True
    banner: Reply | None = None

    def write(self, data: bytes) -> None:
        """Send ``data``; a request is far below the transport's high-water mark, so no drain is needed
        (a failed send closes the transport, and the next read raises its error)."""
        if self.stream.error is not None:
            raise self.stream.error
        if self.transport.is_closing():
            raise ProbeFailure("closed", "connection closed before the request was sent")
        self.transport.write(data)

    def close(self) -> None:
        self.reusable = False
        if not self.transport.is_closing():
            self.transport.close()


async def open_connection(host: str, port: int, ident: int) -> Connection:
    """A TCP connection (asyncio turns TCP_NODELAY on for TCP transports)."""
    loop = asyncio.get_running_loop()
    transport, stream = await loop.create_connection(lambda: _Stream(HEADER_CAP + 1024), host, port)
    return Connection(stream, transport, ident)


def host_header(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def http_exchange(
    conn: Connection, *, method: str, path: str, host_header: str, keep_alive: bool
) -> Reply:
    """One request/response on ``conn``; marks it not reusable when the server ends it or the body is cut."""
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: {USER_AGENT}\r\n"
        f"Accept: */*\r\nConnection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    conn.write(request.encode("ascii"))
    reader = conn.stream
    status, headers = await _read_head(reader)
    while 100 <= status < 200 and status != 101:  # skip interim responses
        status, headers = await _read_head(reader)
    if status == 101:
        conn.close()
        raise ProbeFailure("bad_response", "unexpected protocol switch (101)")
    values = dict(headers)
    if not keep_alive or "close" in values.get("connection", "").lower():
        conn.reusable = False
    body = b""
    if method == "HEAD" or status in (204, 304):
        pass
    elif "chunked" in values.get("transfer-encoding", "").lower():
        body = await _read_chunked(conn)
    elif (length := values.get("content-length")) is not None:
        if not length.strip().isdigit():
            conn.close()
            raise ProbeFailure("bad_response", "invalid Content-Length")
        n = int(length)
        body = await reader.readexactly(min(n, BODY_CAP))
        if n > BODY_CAP:
            conn.reusable = False
    else:
        conn.reusable = False
        body = await _read_to_eof(reader)
    if not conn.reusable:
        conn.close()
    return Reply(body=body, headers=tuple(headers), status=status)


async def _read_head(reader: _Stream) -> tuple[int, list[tuple[str, str]]]:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as exc:
        raise ProbeFailure("bad_response", "response head too large") from exc
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise ProbeFailure("closed", "connection closed without a response") from exc
        raise ProbeFailure("bad_response", "truncated response head") from exc
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if (
        len(parts) < 2
        or not parts[0].startswith("HTTP/1.")
        or not (len(parts[1]) == 3 and parts[1].isdigit())
    ):
        raise ProbeFailure("bad_response", f"not an HTTP/1.x status line: {lines[0][:60]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ProbeFailure("bad_response", "malformed header line")
        headers.append((name.lower(), value.strip()))
        if len(headers) > MAX_HEADERS:
            raise ProbeFailure("bad_response", "too many headers")
    return int(parts[1]), headers


async def _read_chunked(conn: Connection) -> bytes:
    out = bytearray()
    while True:
        size_line = await conn.stream.readuntil(b"\r\n")
        size_text = size_line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError as exc:
            raise ProbeFailure("bad_response", "invalid chunk size") from exc
        if size == 0:
            while (await conn.stream.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return bytes(out)
        if len(out) + size > BODY_CAP:
            out += await conn.stream.readexactly(BODY_CAP - len(out))
            conn.reusable = False
            return bytes(out)
        out += await conn.stream.readexactly(size)
        await conn.stream.readexactly(2)


async def _read_to_eof(reader: _Stream) -> bytes:
    out = bytearray()
    while len(out) < BODY_CAP:
        chunk = await reader.read(BODY_CAP - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


async def tcp_exchange(conn: Connection, seq: int) -> Reply:
    """A banner (read once per connection), or else the echo of one probe line."""
    if conn.banner is None:
        try:
            line = await asyncio.wait_for(conn.stream.readline(), BANNER_WAIT_S)
        except TimeoutError:
            line = b""
        if line:
            conn.banner = Reply(body=line[:BODY_CAP].rstrip(b"\r\n"))
            return conn.banner
        conn.banner = Reply(body=b"")
    conn.write(f"svcscope-probe {seq}\n".encode())
    echoed = await conn.stream.readline()
    if not echoed:
        raise ProbeFailure("closed", "connection closed without a reply")
    # A reused connection keeps its banner: the pod is the one that greeted us.
    if conn.banner.body:
        return conn.banner
    return Reply(body=echoed[:BODY_CAP].rstrip(b"\r\n"))


class _Datagram(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | BaseException] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        self.queue.put_nowait(exc)


@dataclass(slots=True)
class UdpSocket:
    transport: asyncio.DatagramTransport
    protocol: _Datagram
    ident: int

    def close(self) -> None:
        self.transport.close()

    async def exchange(self, seq: int) -> Reply:
        while not self.protocol.queue.empty():  # drop late replies of earlier (timed-out) requests
            self.protocol.queue.get_nowait()
        self.transport.sendto(f"svcscope-probe {seq}\n".encode())
        item = await self.protocol.queue.get()
        if isinstance(item, BaseException):
            raise item
        return Reply(body=item[:BODY_CAP].rstrip(b"\r\n"))


async def open_udp(host: str, port: int, ident: int) -> UdpSocket:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_Datagram, remote_addr=(host, port))
    return UdpSocket(transport, protocol, ident)
