"""Closing a watch over TLS leaves nothing for the event loop to finish.

A real TLS server on loopback streams one watch event and then never reads again, so it never answers a
TLS close_notify (an apiserver that is going away behaves the same). Under uvloop, the loop uvicorn runs,
a graceful TLS close still waiting for that answer keeps a handle open: closing the loop then fails with
EBUSY and warns about unclosed transports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import uvloop

from app.kube.cache import Kind
from app.kube.client import ApiSource, create_api_client

EVENT = {"type": "ADDED", "object": {"kind": "Service", "metadata": {"name": "web", "resourceVersion": "7"}}}


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


@contextlib.contextmanager
def silent_watch_server(cert: Path, key: Path) -> Iterator[int]:
    """Accepts one TLS connection, answers with one watch event, then stops reading until the test ends."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)
    done = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            raw, _ = listener.accept()
            conn = context.wrap_socket(raw, server_side=True)
            held.append(conn)
            request = b""
            while b"\r\n\r\n" not in request and len(request) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            line = json.dumps(EVENT).encode() + b"\n"
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                + f"{len(line):x}\r\n".encode()
                + line
                + b"\r\n"
            )
            done.wait(60)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        thread.join(10)
        for conn in held:
            conn.close()
        listener.close()


def kubeconfig(tmp_path: Path, port: int, ca: Path) -> Path:
    path = tmp_path / "kubeconfig"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {"server": f"https://127.0.0.1:{port}", "certificate-authority": str(ca)},
            }
        ],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(json.dumps(config))
    return path


@pytest.mark.timeout(60)  # without the fix, closing the loop blocks
def test_a_closed_tls_watch_lets_the_uvloop_loop_close(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    unraisable: list[object] = []

    async def watch_one(config: Path) -> Mapping[str, Any]:
        api = await create_api_client(kubeconfig=str(config), in_cluster=False)
        try:
            events = ApiSource(api).watch(Kind.SERVICES, "default", "1", 60)
            first = await anext(events)
            await events.aclose()
            return first
        finally:
            await api.close()

    with silent_watch_server(cert, key) as port, pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.unraisablehook", unraisable.append)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            first = runner.run(asyncio.wait_for(watch_one(kubeconfig(tmp_path, port, cert)), 30))
        # Leaving the runner closed the loop: with a close still pending it raises OSError (EBUSY).
    assert first["type"] == "ADDED"
    assert unraisable == []
