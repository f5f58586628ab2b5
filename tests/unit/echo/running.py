"""A real echo server on 127.0.0.1 ephemeral ports, on an event loop in a thread of its own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

from app.echo import EchoServer, Identity, ServeConfig


class RunningServer:
    def __init__(self, identity: Identity) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        cfg = ServeConfig(identity=identity, host="127.0.0.1", http_port=0, tcp_port=0, udp_port=0, grace=2.0)
        self.server = EchoServer(cfg)
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(timeout=10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def running(identity: Identity) -> Iterator[RunningServer]:
    """For fixtures and `for srv in running(...)`: the server stops when the loop body ends."""
    srv = RunningServer(identity)
    try:
        yield srv
    finally:
        srv.stop()
