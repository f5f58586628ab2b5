"""The server protocol (app.web.server) on a real socket: oversized requests are answered and the
connection ends with FIN after the rest was read, never with a reset (which kills kubectl port-forward)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.config import Settings
from app.kube.cache import ServiceCache
from app.main import create_app
from app.web.server import HEAD_LIMIT, LingeringH11Protocol

pytestmark = pytest.mark.timeout(60)


def serve(protocol: type) -> Iterator[int]:
    app = create_app(Settings(csrf_secret="t"), cache=ServiceCache(), start_watchers=False)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, http=protocol, lifespan="on", log_level="error", ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    port: int = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    yield from serve(LingeringH11Protocol)


@pytest.fixture(scope="module")
def stock_port() -> Iterator[int]:
    yield from serve(H11Protocol)


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def send_slowly(sock: socket.socket, data: bytes, piece: int = 8192) -> None:
    """In pieces, so that the server sees an incomplete request head grow past its buffer."""
    for i in range(0, len(data), piece):
        sock.sendall(data[i : i + piece])
        time.sleep(0.001)


def read_until_closed(sock: socket.socket) -> tuple[bytes, str]:
    """Everything the server sends, and how the connection ended: "fin" or "reset"."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        return data, "reset"
    return data, "fin"


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length, leaving the connection open."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def get(target: bytes, extra: bytes = b"") -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\n" + extra + b"\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "status", "words"),
    [
        (get(b"/?q=" + b"a" * 200 * 1024), 414, "URL too long"),
        (get(b"/", b"X-Big: " + b"a" * 200 * 1024 + b"\r\n"), 431, "request headers too large"),
    ],
)
def test_head_above_the_server_limit_answered_then_fin_not_reset(
    port: int, request_bytes: bytes, status: int, words: str
) -> None:
    with connect(port) as sock:
        send_slowly(sock, request_bytes)
        data, ending = read_until_closed(sock)
    assert ending == "fin", data[:200]
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode())
    assert words in json.loads(body)["detail"] and str(HEAD_LIMIT) in json.loads(body)["detail"]
    assert b"x-frame-options: DENY" in head and b"content-security-policy: " in head


def test_stock_uvicorn_resets_the_connection(stock_port: int) -> None:
    """The control: the reason for app.web.server (stock uvicorn closes with the rest unread)."""
    endings = set()
    for _ in range(3):
        with connect(stock_port) as sock:
            try:
                send_slowly(sock, get(b"/?q=" + b"a" * 200 * 1024))
            except (ConnectionResetError, BrokenPipeError):
                endings.add("reset")
                continue
            endings.add(read_until_closed(sock)[1])
    assert "reset" in endings


@pytest.mark.parametrize(
    ("request_bytes", "status", "words"),
    [
        (get(b"/?q=" + b"a" * 20 * 1024), 414, "URL too long"),  # above the app's 8 KiB, below the server's
        (get(b"/", b"X-Big: " + b"a" * 40 * 1024 + b"\r\n"), 431, "request headers too large"),
    ],
)
def test_head_above_the_app_limit_answered_and_the_connection_stays(
    port: int, request_bytes: bytes, status: int, words: str
) -> None:
    with connect(port) as sock:
        sock.sendall(request_bytes)
        got, headers, body = read_response(sock)
        assert got == status and words in json.loads(body)["detail"]
        assert headers["x-content-type-options"] == "nosniff"
        sock.sendall(get(b"/healthz"))  # the same connection goes on
        got, _, body = read_response(sock)
        assert got == 200 and json.loads(body) == {"status": "ok"}


def test_large_declared_body_refused_at_once_and_drained(port: int) -> None:
    size = 10 * 1024 * 1024
    with connect(port) as sock:
        sock.sendall(
            b"POST /api/v1/probes HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {size}\r\n\r\n".encode()
        )
        got, _, body = read_response(sock)  # before a byte of the body was sent
        assert got == 413 and "request body too large" in json.loads(body)["detail"]
        chunk = b" " * 65536
        for _ in range(size // len(chunk)):
            sock.sendall(chunk)
        sock.sendall(get(b"/healthz"))  # the body was read and dropped: the connection goes on
        got, _, body = read_response(sock)
        assert got == 200


def test_connection_close_after_a_refused_body_still_ends_with_fin(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(
            b"POST /api/v1/probes HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: 4000000\r\n\r\n"
        )
        got, _, _ = read_response(sock)
        assert got == 413
        for _ in range(4000000 // 65536):
            sock.sendall(b" " * 65536)
        sock.shutdown(socket.SHUT_WR)
        _, ending = read_until_closed(sock)
    assert ending == "fin"
