"""Echo backend and client for the devcluster (stdlib only: it runs in the bare Python base image).

`python -m app.echo serve` answers on three ports with the identity of the pod it runs in, taken from the
Downward API environment (POD_NAME, POD_IP, NODE_NAME):

- HTTP (ECHO_HTTP_PORT, 8080): any path, GET/HEAD (other methods get the same reply), HTTP/1.1 keep-alive
  and `Connection: close`; JSON ``{"pod", "ip", "node", "path", "method"}`` plus an ``X-Pod-Name`` header.
- TCP (ECHO_TCP_PORT, 9000): on connect one line ``pod=<name> ip=<ip> node=<node>``, then echoes its input.
- UDP (ECHO_UDP_PORT, 9001): answers every datagram with that same line.

ECHO_MODE changes what a reply reveals, so that attribution without a pod name can be tested:
``anonymous`` replaces name/ip/node by a token that is stable for a pod (a hash of its name and IP, so it
survives a container restart) and ``identical`` makes every pod answer exactly alike.

`python -m app.echo client` sends a bounded number of requests, each on a new connection (kube-proxy
balances connections, not requests), and prints one answering identity per line or ``ERROR <kind>``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http.client
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, cast
from urllib.parse import urlsplit

Mode = Literal["normal", "anonymous", "identical"]
MODES: tuple[Mode, ...] = ("normal", "anonymous", "identical")

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 1024 * 1024
MAX_COUNT = 100_000  # the client refuses more: every loop here is bounded
LISTEN_BACKLOG = 1024  # probe benchmarks open up to 256 connections at once


@dataclass(frozen=True, slots=True)
class Identity:
    pod: str
    ip: str
    node: str
    mode: Mode = "normal"

    @property
    def token(self) -> str:
        # Stable per pod but not the name itself: lets a prober tell pods apart without being told who is who.
        return hashlib.sha256(f"{self.pod}|{self.ip}".encode()).hexdigest()[:16]

    def line(self) -> str:
        """The TCP banner / UDP reply, newline included."""
        if self.mode == "anonymous":
            return f"token={self.token}\n"
        if self.mode == "identical":
            return "echo\n"
        return f"pod={self.pod} ip={self.ip} node={self.node}\n"

    def http_body(self, method: str, path: str) -> dict[str, str]:
        if self.mode == "anonymous":
            return {"token": self.token, "path": path, "method": method}
        if self.mode == "identical":
            return {"path": path, "method": method}
        return {"pod": self.pod, "ip": self.ip, "node": self.node, "path": path, "method": method}

    def http_headers(self) -> dict[str, str]:
        return {"X-Pod-Name": self.pod} if self.mode == "normal" else {}


@dataclass(frozen=True, slots=True)
class ServeConfig:
    identity: Identity
    host: str = "0.0.0.0"
    http_port: int = 8080
    tcp_port: int = 9000
    udp_port: int = 9001
    idle_timeout: float = 60.0  # an idle keep-alive or TCP echo connection is closed after this
    grace: float = 5.0  # on SIGTERM, in-flight connections get this long before they are cut

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServeConfig:
        mode = env.get("ECHO_MODE", "normal")
        if mode not in MODES:
            raise ValueError(f"ECHO_MODE must be one of {', '.join(MODES)}, not {mode!r}")
        identity = Identity(
            pod=env.get("POD_NAME") or socket.gethostname(),
            ip=env.get("POD_IP", ""),
            node=env.get("NODE_NAME", ""),
            mode=mode,
        )
        return cls(
            identity=identity,
            host=env.get("ECHO_BIND", "0.0.0.0"),
            http_port=int(env.get("ECHO_HTTP_PORT", "8080")),
            tcp_port=int(env.get("ECHO_TCP_PORT", "9000")),
            udp_port=int(env.get("ECHO_UDP_PORT", "9001")),
            idle_timeout=float(env.get("ECHO_IDLE_TIMEOUT", "60")),
        )


class _BadRequest(Exception):
    pass


@dataclass(slots=True)
class _Request:
    method: str
    path: str
    version: str
    headers: dict[str, str]

    def wants_close(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" not in conn
        return "close" in conn


async def _read_request(reader: asyncio.StreamReader, idle_timeout: float) -> _Request | None:
    """Read one request head (and discard its body); None when the peer closed between requests."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), idle_timeout)
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise _BadRequest("truncated request") from exc
        return None
    except asyncio.LimitOverrunError as exc:
        raise _BadRequest("request head too large") from exc
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest("malformed request line")
    headers: dict[str, str] = {}
    for raw in lines[1:]:
        if not raw:
            continue
        name, sep, value = raw.partition(":")
        if not sep:
            raise _BadRequest("malformed header")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise _BadRequest("chunked bodies are not supported")
    length = int(headers.get("content-length", "0") or "0")
    if length < 0 or length > MAX_BODY_BYTES:
        raise _BadRequest("body too large")
    if length:
        await asyncio.wait_for(reader.readexactly(length), idle_timeout)
    return _Request(method=parts[0], path=parts[1], version=parts[2], headers=headers)


def _response(status: str, headers: Mapping[str, str], body: bytes, *, head_only: bool, close: bool) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append("Connection: close" if close else "Connection: keep-alive")
    out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return out if head_only else out + body


class _UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, reply: bytes) -> None:
        self._reply = reply
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector transport does not subclass DatagramTransport on every Python version.
        self._transport = cast("asyncio.DatagramTransport", transport)

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        if self._transport is not None:
            self._transport.sendto(self._reply, addr)


@dataclass(slots=True)
class EchoServer:
    """The three listeners on one event loop; `start()` binds (port 0 = ephemeral), `stop()` drains."""

    config: ServeConfig
    http_port: int = 0
    tcp_port: int = 0
    udp_port: int = 0
    _servers: list[asyncio.Server] = field(default_factory=list)
    _udp: asyncio.DatagramTransport | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _closing: bool = False

    async def start(self) -> None:
        cfg = self.config
        http = await asyncio.start_server(
            self._handle_http, cfg.host, cfg.http_port, backlog=LISTEN_BACKLOG, limit=MAX_HEADER_BYTES
        )
        tcp = await asyncio.start_server(self._handle_tcp, cfg.host, cfg.tcp_port, backlog=LISTEN_BACKLOG)
        self._servers = [http, tcp]
        self.http_port = http.sockets[0].getsockname()[1]
        self.tcp_port = tcp.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        reply = cfg.identity.line().encode()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpEcho(reply), local_addr=(cfg.host, cfg.udp_port)
        )
        self._udp = transport
        self.udp_port = transport.get_extra_info("sockname")[1]

    async def stop(self) -> None:
        """Stop accepting, let in-flight connections finish within the grace period, then cut the rest."""
        self._closing = True
        for server in self._servers:
            server.close()
        if self._udp is not None:
            self._udp.close()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self.config.grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def _connection(self, writer: asyncio.StreamWriter) -> AsyncIterator[None]:
        """Track the handler for draining, swallow the peer going away, always close the socket."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            yield
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # the peer stalled, vanished or sent garbage: nobody is left to answer
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _handle_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        identity = self.config.identity
        async with self._connection(writer):
            while True:
                try:
                    req = await _read_request(reader, self.config.idle_timeout)
                except _BadRequest as exc:
                    body = (str(exc) + "\n").encode()
                    writer.write(_response("400 Bad Request", {}, body, head_only=False, close=True))
                    await writer.drain()
                    return
                if req is None:
                    return
                # While draining on SIGTERM, finish this request but tell the client not to reuse the socket.
                close = req.wants_close() or self._closing
                body = json.dumps(identity.http_body(req.method, req.path)).encode() + b"\n"
                headers = {"Content-Type": "application/json", **identity.http_headers()}
                writer.write(_response("200 OK", headers, body, head_only=req.method == "HEAD", close=close))
                await writer.drain()
                if close:
                    return

    async def _handle_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with self._connection(writer):
            writer.write(self.config.identity.line().encode())
            await writer.drain()
            while not self._closing:
                data = await asyncio.wait_for(reader.read(65536), self.config.idle_timeout)
                if not data:
                    return
                writer.write(data)
                await writer.drain()


async def serve(config: ServeConfig) -> None:
    """Run until SIGTERM or SIGINT, then drain."""
    server = EchoServer(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"echo: pod={config.identity.pod} mode={config.identity.mode} http=:{server.http_port} "
        f"tcp=:{server.tcp_port} udp=:{server.udp_port}",
        file=sys.stderr,
        flush=True,
    )
    await stop.wait()
    await server.stop()


# -- client


def parse_identity(text: str) -> str:
    """The answering identity in a banner line or HTTP JSON body: pod name, else token, else `anonymous`."""
    text = text.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return "anonymous"
        if isinstance(data, dict):
            for key in ("pod", "token"):
                value = data.get(key)
                if isinstance(value, str) and value:
                    return value
        return "anonymous"
    fields = dict(part.partition("=")[::2] for part in text.split())
    return fields.get("pod") or fields.get("token") or "anonymous"


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, socket.gaierror):
        return "dns"
    if isinstance(exc, (http.client.HTTPException, ValueError)):
        return "protocol"
    if isinstance(exc, OSError) and exc.errno is not None:
        return "oserror-" + (os.strerror(exc.errno).lower().replace(" ", "-") or str(exc.errno))
    return type(exc).__name__.lower()


def _split_hostport(target: str) -> tuple[str, int]:
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

    def once(self) -> str:
        conn = self._conn or http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        headers = {} if self._keepalive else {"Connection": "close"}
        try:
            conn.request("GET", self._path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
        except BaseException:
            conn.close()
            self._conn = None
            raise
        if self._keepalive and not resp.will_close:
            self._conn = conn
        else:
            conn.close()
            self._conn = None
        if resp.status != 200:
            return f"ERROR http-{resp.status}"
        name = resp.getheader("X-Pod-Name")
        return name or parse_identity(body.decode("utf-8", "replace"))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def tcp_once(host: str, port: int, timeout: float) -> str:
    """Connect, read the banner, check that one line is echoed back, close."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        f = sock.makefile("rwb")
        banner = f.readline(4096)
        if not banner.endswith(b"\n"):
            return "ERROR protocol"
        f.write(b"ping\n")
        f.flush()
        if f.readline(4096) != b"ping\n":
            return "ERROR protocol"
        return parse_identity(banner.decode("utf-8", "replace"))


def udp_once(host: str, port: int, timeout: float) -> str:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        # A new socket (and so a new source port) per request, like a new TCP connection.
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.send(b"ping\n")
        return parse_identity(sock.recv(4096).decode("utf-8", "replace"))


def run_client(
    args: argparse.Namespace, out: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic
) -> int:
    if not (args.url or args.tcp or args.udp):
        raise SystemExit("client: give --url, --tcp and/or --udp")
    probes: list[tuple[Callable[[], str], Callable[[], None]]] = []
    if args.url:
        http_prober = HttpProber(args.url, args.timeout, keepalive=args.keepalive)
        probes.append((http_prober.once, http_prober.close))
    if args.tcp:
        host, port = _split_hostport(args.tcp)
        probes.append((lambda: tcp_once(host, port, args.timeout), lambda: None))
    if args.udp:
        uhost, uport = _split_hostport(args.udp)
        probes.append((lambda: udp_once(uhost, uport, args.timeout), lambda: None))
    deadline = clock() + (args.deadline if args.deadline is not None else args.count * args.timeout + 5)
    for probe, close in probes:
        for _ in range(args.count):
            if clock() > deadline:
                out("ERROR deadline")
                continue
            try:
                out(probe())
            except Exception as exc:
                out(f"ERROR {_error_kind(exc)}")
        close()
    return 0


def _positive_count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"count must be 1..{MAX_COUNT}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app.echo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="answer HTTP/TCP/UDP with this pod's identity (configured by env)")
    client = sub.add_parser("client", help="send N requests, one identity (or ERROR kind) per line")
    client.add_argument("--count", type=_positive_count, default=1)
    client.add_argument("--url", help="http://HOST:PORT/PATH")
    client.add_argument("--tcp", metavar="HOST:PORT")
    client.add_argument("--udp", metavar="HOST:PORT")
    client.add_argument("--timeout", type=_positive_float, default=2.0, help="per request, seconds")
    client.add_argument("--deadline", type=_positive_float, help="for the whole run, seconds")
    client.add_argument("--keepalive", action="store_true", help="reuse one HTTP connection")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        asyncio.run(serve(ServeConfig.from_env(os.environ)))
        return 0
    return run_client(args, out=lambda line: print(line, flush=True))


if __name__ == "__main__":
    sys.exit(main())
