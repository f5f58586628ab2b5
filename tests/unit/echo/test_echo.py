"""Wire tests of the echo backend (a real server on 127.0.0.1 ephemeral ports) and of its packaging."""

from __future__ import annotations

import ast
import asyncio
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import echo
from app.echo import Identity
from app.echo.identity import format_peer
from tests.unit.echo.running import RunningServer, running

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def server() -> Iterator[RunningServer]:
    yield from running(Identity(pod="echo-a", ip="198.18.0.7", node="svcscope-dc"))


def _get(port: int, method: str = "GET", headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request(method, "/some/path?x=1", headers=headers or {})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def test_http_get_reports_identity(server: RunningServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.server.http_port, timeout=5)
    conn.request("GET", "/some/path?x=1")
    assert conn.sock is not None
    client = "127.0.0.1:{}".format(*conn.sock.getsockname()[1:2])
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 200
    assert resp.getheader("X-Pod-Name") == "echo-a"
    assert resp.getheader("Content-Length") == str(len(body))
    assert json.loads(body) == {
        "pod": "echo-a",
        "ip": "198.18.0.7",
        "node": "svcscope-dc",
        "path": "/some/path?x=1",
        "method": "GET",
        "peer": client,
    }


def test_http_head_has_length_but_no_body(server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", server.server.http_port), timeout=5) as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        for _ in range(100):  # bounded: the server closes after one response
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Content-Length: " in head and b"Content-Length: 0" not in head
    assert body == b""


def test_http_keepalive_reuses_connection(server: RunningServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.server.http_port, timeout=5)
    conn.request("GET", "/1")
    first = conn.getresponse()
    first.read()
    sock = conn.sock
    conn.request("GET", "/2")
    second = conn.getresponse()
    body = json.loads(second.read())
    assert conn.sock is sock and sock is not None  # no reconnect happened
    assert not first.will_close and body["path"] == "/2"
    conn.close()


@pytest.mark.parametrize(
    ("request_bytes", "expect_close"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", True),
        (b"GET / HTTP/1.0\r\n\r\n", True),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False),
    ],
)
def test_http_connection_header(server: RunningServer, request_bytes: bytes, expect_close: bool) -> None:
    with socket.create_connection(("127.0.0.1", server.server.http_port), timeout=5) as sock:
        sock.sendall(request_bytes)
        f = sock.makefile("rb")
        status = f.readline()
        headers = {}
        for _ in range(50):
            line = f.readline().strip()
            if not line:
                break
            name, _, value = line.decode().partition(":")
            headers[name.lower()] = value.strip()
        body = f.read(int(headers["content-length"]))
        assert status.startswith(b"HTTP/1.1 200") and json.loads(body)["pod"] == "echo-a"
        assert headers["connection"] == ("close" if expect_close else "keep-alive")
        if expect_close:
            assert f.read(1) == b""  # the server closed its side
        f.close()


def test_http_bad_request(server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", server.server.http_port), timeout=5) as sock:
        sock.sendall(b"NONSENSE\r\n\r\n")
        assert sock.makefile("rb").readline().startswith(b"HTTP/1.1 400")


def test_tcp_banner_then_echo(server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", server.server.tcp_port), timeout=5) as sock:
        f = sock.makefile("rwb")
        client = f"127.0.0.1:{sock.getsockname()[1]}".encode()
        assert f.readline() == b"pod=echo-a ip=198.18.0.7 node=svcscope-dc peer=" + client + b"\n"
        f.write(b"hello there\n")
        f.flush()
        assert f.readline() == b"hello there\n"
        f.close()


def test_udp_reply(server: RunningServer) -> None:
    assert echo.udp_once("127.0.0.1", server.server.udp_port, 5).identity == "echo-a"


def test_udp_reply_names_the_source_address() -> None:
    identity = Identity(pod="echo-a", ip="198.18.0.7", node="n", mode="anonymous")
    for srv in running(identity):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.connect(("127.0.0.1", srv.server.udp_port))
            sock.send(b"ping\n")
            reply = sock.recv(4096)
            assert reply == f"token={identity.token} peer=127.0.0.1:{sock.getsockname()[1]}\n".encode()


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (("10.1.2.3", 40000), "10.1.2.3:40000"),
        (("::ffff:10.1.2.3", 40000, 0, 0), "10.1.2.3:40000"),  # an IPv4 client of a dual-stack listener
        (("fd00::7", 5, 0, 0), "[fd00::7]:5"),
        (("fe80::1%eth0", 5, 0, 2), "[fe80::1]:5"),
        (None, None),
        ("/run/echo.sock", None),
        (("not-an-ip", 1), None),
    ],
)
def test_format_peer(address: object, expected: str | None) -> None:
    assert format_peer(address) == expected


def test_many_concurrent_connections(server: RunningServer) -> None:
    port = server.server.http_port

    async def one() -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = await reader.read()
        writer.close()
        await writer.wait_closed()
        return json.loads(data.partition(b"\r\n\r\n")[2])["pod"]  # type: ignore[no-any-return]

    async def many() -> list[str]:
        return await asyncio.wait_for(asyncio.gather(*(one() for _ in range(256))), timeout=30)

    assert asyncio.run(many()) == ["echo-a"] * 256


@pytest.mark.parametrize("mode", ["anonymous", "identical"])
def test_modes_hide_the_name(mode: echo.Mode) -> None:
    bodies = []
    for pod, ip in (("echo-a", "198.18.0.7"), ("echo-b", "198.18.0.8")):
        for srv in running(Identity(pod=pod, ip=ip, node="n", mode=mode)):
            resp = http.client.HTTPConnection("127.0.0.1", srv.server.http_port, timeout=5)
            resp.request("GET", "/")
            r = resp.getresponse()
            body = r.read()
            resp.close()
            assert r.getheader("X-Pod-Name") is None
            with socket.create_connection(("127.0.0.1", srv.server.tcp_port), timeout=5) as sock:
                banner = sock.makefile("rb").readline()
            for text in (body, banner):
                assert pod.encode() not in text and ip.encode() not in text
            bodies.append(body)
    # Each reply also names the client's own address (its source port differs per connection), nothing else.
    docs = [json.loads(b) for b in bodies]
    assert all(doc.pop("peer").startswith("127.0.0.1:") for doc in docs)
    if mode == "identical":
        assert docs[0] == docs[1]
    else:
        tokens = [json.loads(b)["token"] for b in bodies]
        assert tokens[0] != tokens[1]
        assert tokens[0] == Identity(pod="echo-a", ip="198.18.0.7", node="other", mode=mode).token


def test_serve_exits_cleanly_on_sigterm() -> None:
    env = {
        **os.environ,
        "ECHO_BIND": "127.0.0.1",
        "ECHO_HTTP_PORT": "0",
        "ECHO_TCP_PORT": "0",
        "ECHO_UDP_PORT": "0",
        "POD_NAME": "sig",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.echo", "serve"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        ready = proc.stderr.readline()  # printed once the ports are bound
        assert "pod=sig" in ready
        port = int(ready.split("http=:")[1].split()[0])
        assert json.loads(_read_body(port))["pod"] == "sig"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


def _read_body(port: int) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/")
    body = conn.getresponse().read()
    conn.close()
    return body


def _imported_modules(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_echo_imports_only_the_standard_library() -> None:
    # The echo image is the bare Python base plus app/echo/: an import of anything else fails only there.
    package = ROOT / "app" / "echo"
    outside = {
        f"{path.name}: {name}"
        for path in sorted(package.glob("*.py"))
        for name in _imported_modules(path.read_text())
        if name.split(".")[0] not in sys.stdlib_module_names and not name.startswith("app.echo")
    }
    assert outside == set()


def test_echo_runs_from_its_own_files_without_site_packages(tmp_path: Path) -> None:
    # What the echo image holds (devcluster/images.py build_echo): app/__init__.py and app/echo/ only.
    shutil.copytree(
        ROOT / "app" / "echo", tmp_path / "app" / "echo", ignore=shutil.ignore_patterns("__pycache__")
    )
    (tmp_path / "app" / "__init__.py").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-S", "-m", "app.echo", "client", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--count" in proc.stdout
