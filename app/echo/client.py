"""The echo client: a bounded number of HTTP, TCP or UDP requests, each on a new connection by default
(kube-proxy balances connections, not requests), one output record per request (app.echo.record)."""

from __future__ import annotations

import argparse
import errno
import http.client
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from app.echo.record import MAX_EXCERPT_CHARS, Proto, Record, safe_identity, valid_peer

# The most of one reply the client reads. The identity sits at the start of a reply; a backend that sends
# 250 MB must not grow a probe pod's memory, so the rest is never read (the connection is closed instead).
MAX_REPLY_BYTES = 64 * 1024
MAX_LINE_BYTES = 4096  # a TCP banner or echoed line, a UDP datagram


@dataclass(frozen=True, slots=True)
class Answer:
    """What the backend said about itself in one reply."""

    identity: str | None = None
    peer: str | None = None
    status: int | None = None
    truncated: bool = False
    local: str | None = None  # the client's own address on the connection (before any NAT)
    excerpt: str | None = None  # the reply's start, when it names no identity


def local_address(sock: socket.socket | None) -> str | None:
    """``IP:PORT`` (``[IPv6]:PORT``) of the socket's own end, as a record writes addresses."""
    if sock is None:
        return None
    try:
        host, port = sock.getsockname()[:2]
    except OSError:
        return None
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ProbeError(Exception):
    """A request failed in a way that is not an exception of the socket layer."""

    def __init__(self, kind: str, status: int | None = None) -> None:
        super().__init__(kind)
        self.kind = kind
        self.status = status


def parse_reply(text: str) -> Answer:
    """Identity and peer from a banner line (``pod=… peer=…``) or an HTTP JSON body.

    The identity is the pod name, else the anonymous token, else None (and the reply's start is kept)."""
    text = text.strip()
    fields: dict[str, object]
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            return Answer(excerpt=excerpt_of(text))
        fields = data if isinstance(data, dict) else {}
    else:
        fields = dict(part.partition("=")[::2] for part in text.split())
    identity = next((v for k in ("pod", "token") if isinstance(v := fields.get(k), str) and v), None)
    peer = fields.get("peer")
    return Answer(
        safe_identity(identity),
        peer if isinstance(peer, str) and valid_peer(peer) else None,
        excerpt=None if identity else excerpt_of(text),
    )


def excerpt_of(text: str) -> str | None:
    """The start of a reply that names no identity (None for an empty one)."""
    return text[:MAX_EXCERPT_CHARS] or None


def parse_identity(text: str) -> str:
    """The answering identity in a banner line or HTTP JSON body: pod name, else token, else `anonymous`."""
    return parse_reply(text).identity or "anonymous"


def error_kind(exc: BaseException) -> str:
    """The record's error kind for an exception of one request: always one of record.ERROR_KINDS."""
    if isinstance(exc, ProbeError):
        return exc.kind
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, socket.gaierror):
        return "dns"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "reset"
    if isinstance(exc, http.client.RemoteDisconnected | http.client.IncompleteRead):
        return "closed"
    if isinstance(exc, http.client.HTTPException | ValueError | UnicodeError):
        return "bad_response"
    if isinstance(exc, OSError):
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return "unreachable"
        if exc.errno == errno.ETIMEDOUT:
            return "timeout"
        return "os_error"
    return "error"


def split_hostport(target: str) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {target!r}")
    return host.strip("[]"), int(port)


class HttpProber:
    """GET a URL; a new connection per request unless keep-alive is asked for."""

    def __init__(self, url: str, timeout: float, *, keepalive: bool = False) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"only http:// URLs are supported, got {url!r}")
        self._host = parts.hostname
        self._port = parts.port or 80
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout = timeout
        self._keepalive = keepalive
        self._conn: http.client.HTTPConnection | None = None
        self.connections = 0  # opened so far: the number of the one the last request used

    def once(self) -> Answer:
        conn = self._conn
        if conn is None:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
            self.connections += 1
        headers = {} if self._keepalive else {"Connection": "close"}
        try:
            conn.request("GET", self._path, headers=headers)
            local = local_address(conn.sock)
            resp = conn.getresponse()
            body = resp.read(MAX_REPLY_BYTES + 1)
        except BaseException:
            conn.close()
            self._conn = None
            raise
        truncated = len(body) > MAX_REPLY_BYTES
        # A connection with unread reply bytes cannot carry the next request: close it rather than drain it.
        if self._keepalive and not resp.will_close and not truncated and resp.isclosed():
            self._conn = conn
        else:
            conn.close()
            self._conn = None
        if resp.status != 200:
            raise ProbeError("http_status", resp.status)
        said = parse_reply(body[:MAX_REPLY_BYTES].decode("utf-8", "replace"))
        name = safe_identity(resp.getheader("X-Pod-Name"))
        return Answer(
            name or said.identity,
            said.peer,
            resp.status,
            truncated,
            excerpt=None if name else said.excerpt,
            local=local,
        )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def tcp_once(host: str, port: int, timeout: float) -> Answer:
    """Connect, read the banner, check that one line is echoed back, close."""
    with socket.create_connection((host, port), timeout=timeout) as sock, sock.makefile("rwb") as f:
        banner = f.readline(MAX_LINE_BYTES)
        if not banner.endswith(b"\n"):
            raise ProbeError("bad_response")
        f.write(b"ping\n")
        f.flush()
        if f.readline(MAX_LINE_BYTES) != b"ping\n":
            raise ProbeError("bad_response")
        return replace(parse_reply(banner.decode("utf-8", "replace")), local=local_address(sock))


def udp_once(host: str, port: int, timeout: float) -> Answer:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        # A new socket (and so a new source port) per request, like a new TCP connection.
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.send(b"ping\n")
        said = parse_reply(sock.recv(MAX_LINE_BYTES).decode("utf-8", "replace"))
        return replace(said, local=local_address(sock))


@dataclass(frozen=True, slots=True)
class _Target:
    proto: Proto
    send: Callable[[], Answer]
    conn: Callable[[int], int]  # request number -> connection number
    close: Callable[[], None]


def _targets(args: argparse.Namespace) -> list[_Target]:
    targets: list[_Target] = []
    if args.url:
        prober = HttpProber(args.url, args.timeout, keepalive=args.keepalive)
        targets.append(_Target("http", prober.once, lambda _seq: prober.connections, prober.close))
    if args.tcp:
        host, port = split_hostport(args.tcp)
        targets.append(_Target("tcp", lambda: tcp_once(host, port, args.timeout), lambda seq: seq, _nothing))
    if args.udp:
        uhost, uport = split_hostport(args.udp)
        targets.append(
            _Target("udp", lambda: udp_once(uhost, uport, args.timeout), lambda seq: seq, _nothing)
        )
    return targets


def _nothing() -> None:
    return None


def run_client(
    args: argparse.Namespace, out: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic
) -> int:
    """Send ``--count`` requests to each target; ``out`` gets one line per request as soon as it is done."""
    if not (args.url or args.tcp or args.udp):
        raise SystemExit("client: give --url, --tcp and/or --udp")
    render = Record.json_line if args.format == "json" else Record.text_line
    deadline = clock() + (args.deadline if args.deadline is not None else args.count * args.timeout + 5)
    for target in _targets(args):
        for seq in range(1, args.count + 1):
            started = clock()
            if started > deadline:
                out(render(Record(seq, target.proto, error="deadline")))
                continue
            error: str | None = None
            try:
                answer = target.send()
            except Exception as exc:
                error = error_kind(exc)
                answer = Answer(status=exc.status if isinstance(exc, ProbeError) else None)
            record = Record(
                seq,
                target.proto,
                identity=None if error else answer.identity,
                error=error,
                status=answer.status,
                latency_ms=round(max(clock() - started, 0.0) * 1000, 3),
                peer=answer.peer,
                local=answer.local,
                conn=target.conn(seq),
                truncated=answer.truncated,
                excerpt=None if error else answer.excerpt,
            )
            out(render(record))
        target.close()
    return 0
