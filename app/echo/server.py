"""The echo backend: HTTP, TCP and UDP listeners on one event loop, configured from the environment."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import cast

from app.echo.http_wire import MAX_HEADER_BYTES, BadRequest, read_request, response
from app.echo.identity import MODES, Identity, format_peer

LISTEN_BACKLOG = 1024  # probe benchmarks open up to 256 connections at once


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


class _UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, identity: Identity) -> None:
        self._identity = identity
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector transport does not subclass DatagramTransport on every Python version.
        self._transport = cast("asyncio.DatagramTransport", transport)

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        if self._transport is not None:
            self._transport.sendto(self._identity.line(format_peer(addr)).encode(), addr)


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
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpEcho(cfg.identity), local_addr=(cfg.host, cfg.udp_port)
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
        peer = format_peer(writer.get_extra_info("peername"))
        async with self._connection(writer):
            while True:
                try:
                    req = await read_request(reader, self.config.idle_timeout)
                except BadRequest as exc:
                    body = (str(exc) + "\n").encode()
                    writer.write(response("400 Bad Request", {}, body, head_only=False, close=True))
                    await writer.drain()
                    return
                if req is None:
                    return
                # While draining on SIGTERM, finish this request but tell the client not to reuse the socket.
                close = req.wants_close() or self._closing
                body = json.dumps(identity.http_body(req.method, req.path, peer)).encode() + b"\n"
                headers = {"Content-Type": "application/json", **identity.http_headers()}
                writer.write(response("200 OK", headers, body, head_only=req.method == "HEAD", close=close))
                await writer.drain()
                if close:
                    return

    async def _handle_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with self._connection(writer):
            writer.write(self.config.identity.line(format_peer(writer.get_extra_info("peername"))).encode())
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
