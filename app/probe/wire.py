"""A small, strict HTTP/1.1 client plus TCP and UDP probes over asyncio (no redirects, capped reads).

Own client instead of a library: we decide exactly when a connection is opened and reused (the
whole point of the probe), a 3xx is reported and never followed, and a reply is read only up to
a small cap.
"""

from __future__ import annotations

import asyncio
import errno
import re
import socket
from dataclasses import dataclass

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


@dataclass(slots=True)
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    ident: int
    reusable: bool = True
    banner: Reply | None = None

    def close(self) -> None:
        self.reusable = False
        if not self.writer.is_closing():
            self.writer.close()


async def open_connection(host: str, port: int, ident: int) -> Connection:
    reader, writer = await asyncio.open_connection(host, port, limit=HEADER_CAP + 1024)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Connection(reader, writer, ident)


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
    conn.writer.write(request.encode("ascii"))
    await conn.writer.drain()
    status, headers = await _read_head(conn.reader)
    while 100 <= status < 200 and status != 101:  # skip interim responses
        status, headers = await _read_head(conn.reader)
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
        body = await conn.reader.readexactly(min(n, BODY_CAP))
        if n > BODY_CAP:
            conn.reusable = False
    else:
        conn.reusable = False
        body = await _read_to_eof(conn.reader)
    if not conn.reusable:
        conn.close()
    return Reply(body=body, headers=tuple(headers), status=status)


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, list[tuple[str, str]]]:
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
        size_line = await conn.reader.readuntil(b"\r\n")
        size_text = size_line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError as exc:
            raise ProbeFailure("bad_response", "invalid chunk size") from exc
        if size == 0:
            while (await conn.reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return bytes(out)
        if len(out) + size > BODY_CAP:
            out += await conn.reader.readexactly(BODY_CAP - len(out))
            conn.reusable = False
            return bytes(out)
        out += await conn.reader.readexactly(size)
        await conn.reader.readexactly(2)


async def _read_to_eof(reader: asyncio.StreamReader) -> bytes:
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
            line = await asyncio.wait_for(conn.reader.readline(), BANNER_WAIT_S)
        except TimeoutError:
            line = b""
        if line:
            conn.banner = Reply(body=line[:BODY_CAP].rstrip(b"\r\n"))
            return conn.banner
        conn.banner = Reply(body=b"")
    conn.writer.write(f"svcscope-probe {seq}\n".encode())
    await conn.writer.drain()
    echoed = await conn.reader.readline()
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
