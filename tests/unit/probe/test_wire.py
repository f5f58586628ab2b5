from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from app.probe import wire
from app.probe.attribution import Reply

pytestmark = pytest.mark.timeout(10)


@asynccontextmanager
async def raw_server(response: bytes) -> AsyncIterator[int]:
    """Answers every request head with ``response`` then closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(response)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def get(port: int, method: str = "GET", keep_alive: bool = True) -> tuple[wire.Connection, Reply]:
    conn = await wire.open_connection("127.0.0.1", port, 1)
    try:
        reply = await wire.http_exchange(
            conn, method=method, path="/", host_header="svc:80", keep_alive=keep_alive
        )
    except BaseException:
        conn.close()
        raise
    return conn, reply


async def test_redirect_is_reported_not_followed() -> None:
    resp = b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest\r\nContent-Length: 0\r\n\r\n"
    async with raw_server(resp) as port:
        conn, reply = await get(port)
    assert reply.status == 302 and reply.header("location") == "http://169.254.169.254/latest"
    conn.close()


async def test_chunked_and_interim() -> None:
    resp = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nTrailer: 1\r\n\r\n"
    )
    async with raw_server(resp) as port:
        conn, reply = await get(port)
    assert (reply.status, reply.body) == (200, b"hello world")
    assert conn.reusable
    conn.close()


@pytest.mark.parametrize(
    "resp",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100_000,
        b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 100_000,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n186a0\r\n" + b"x" * 100_000 + b"\r\n0\r\n\r\n",
    ],
)
async def test_body_capped(resp: bytes) -> None:
    async with raw_server(resp) as port:
        conn, reply = await get(port)
    assert len(reply.body) == wire.BODY_CAP and not conn.reusable


async def test_head_has_no_body_and_close_header() -> None:
    async with raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n") as port:
        conn, reply = await get(port, "HEAD")
    assert reply.body == b"" and not conn.reusable


@pytest.mark.parametrize(
    ("resp", "kind"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "bad_response"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "bad_response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n", "bad_response"),
        (b"HTTP/1.1 200 OK\r\nbroken\r\n\r\n", "bad_response"),
        (b"", "closed"),
        (b"HTTP/1.1 200", "bad_response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "closed"),
    ],
)
async def test_bad_responses(resp: bytes, kind: str) -> None:
    async with raw_server(resp) as port:
        with pytest.raises(Exception) as exc:
            await get(port)
    assert wire.classify(exc.value).kind == kind


async def test_refused_classified() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(OSError) as exc:
        await wire.open_connection("127.0.0.1", port, 1)
    assert wire.classify(exc.value).kind == "refused"


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (TimeoutError(), "timeout"),
        (ConnectionResetError(), "reset"),
        (BrokenPipeError(), "reset"),
        (ValueError(), "error"),
    ],
)
def test_classify(exc: BaseException, kind: str) -> None:
    assert wire.classify(exc).kind == kind


@pytest.mark.parametrize("path", ["/", "/a/b?c=d&e=%20", "/" + "a" * 511])
def test_valid_paths(path: str) -> None:
    assert wire.validate_path(path) == path


@pytest.mark.parametrize(
    "path", ["", "a", "//x", "http://x/", "/a b", "/\x00", "/é", "/#frag", "/" + "a" * 512]
)
def test_invalid_paths(path: str) -> None:
    with pytest.raises(ValueError):
        wire.validate_path(path)


async def test_reply_split_into_many_segments() -> None:
    """Head and body arrive in pieces (the separator split across reads): still one complete reply."""

    ended = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for piece in (b"HTTP/1.1 200 OK\r", b"\nContent-Length: 5\r\n\r", b"\nhel", b"lo"):
            await asyncio.sleep(0.01)
            writer.write(piece)
            await writer.drain()
        writer.close()
        ended.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        conn, reply = await get(server.sockets[0].getsockname()[1])
        await asyncio.wait_for(ended.wait(), 5)
    finally:
        server.close()
    assert (reply.status, reply.body) == (200, b"hello")
    conn.close()


async def test_flooding_peer_is_paused_and_capped() -> None:
    """A peer that streams without end: the read stops at BODY_CAP, the buffer stays bounded."""

    ended = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
        try:
            for _ in range(200):  # up to 12.8 MB, far more than the client ever reads
                writer.write(b"x" * 65536)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            ended.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        conn, reply = await get(server.sockets[0].getsockname()[1])
        assert len(reply.body) == wire.BODY_CAP and not conn.reusable
        assert len(conn.stream.buffer) <= 2 * conn.stream.limit + 262_144
        await asyncio.wait_for(ended.wait(), 5)  # our close ends the flood
    finally:
        server.close()
