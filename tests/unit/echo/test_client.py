"""The echo client against real servers on 127.0.0.1: svcscope's echo backend and small hostile ones."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from app import echo
from app.echo import Identity
from app.echo.client import ProbeError, error_kind
from app.echo.record import ERROR_KINDS, Record, parse_line
from tests.unit.echo.running import RunningServer, running

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def server() -> Iterator[RunningServer]:
    yield from running(Identity(pod="echo-a", ip="198.18.0.7", node="svcscope-dc"))


def _client(*argv: str) -> list[str]:
    lines: list[str] = []
    args = echo.build_parser().parse_args(["client", *argv])
    assert echo.run_client(args, out=lines.append) == 0
    return lines


def _records(*argv: str) -> list[Record]:
    lines = _client("--format", "json", *argv)
    records = [parse_line(line) for line in lines]
    assert None not in records, lines
    return [r for r in records if r is not None]


Handler = Callable[[socket.socket, int], None]


@contextmanager
def raw_server(handler: Handler, *, connections: int) -> Iterator[int]:
    """A TCP server on 127.0.0.1 that runs ``handler(sock, n)`` for each of at most ``connections``."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        for n in range(1, connections + 1):
            try:
                sock, _ = listener.accept()
            except OSError:  # closed by the test, or nobody came within the timeout
                return
            with sock:
                try:
                    handler(sock, n)
                except OSError:
                    pass  # the client went away: what the hostile servers below expect

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(timeout=10)


def _http_reply(body: bytes, headers: str = "") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{headers}Connection: close\r\n\r\n".encode()
        + body
    )


def _read_head(sock: socket.socket) -> None:
    data = b""
    for _ in range(100):  # bounded: a request head is one or two segments
        chunk = sock.recv(4096)
        data += chunk
        if not chunk or b"\r\n\r\n" in data:
            return


def test_client_http_tcp_udp(server: RunningServer) -> None:
    s = server.server
    targets = ["--url", f"http://127.0.0.1:{s.http_port}/", "--tcp", f"127.0.0.1:{s.tcp_port}"]
    targets += ["--udp", f"127.0.0.1:{s.udp_port}", "--timeout", "5"]
    assert _client("--count", "3", *targets) == ["echo-a"] * 9
    records = _records("--count", "3", *targets)
    assert [(r.proto, r.seq, r.conn) for r in records] == [
        (proto, seq, seq) for proto in ("http", "tcp", "udp") for seq in (1, 2, 3)
    ]
    for r in records:
        assert (r.identity, r.error, r.truncated) == ("echo-a", None, False)
        assert r.latency_ms is not None and 0 <= r.latency_ms < 5000
        assert r.peer is not None and r.peer.startswith("127.0.0.1:")  # the address the server saw
        # The client's own end: here no NAT, so the very address and port the server saw.
        assert r.local == r.peer
    assert {r.status for r in records if r.proto == "http"} == {200}


def test_client_keepalive_uses_one_connection(server: RunningServer) -> None:
    url = f"http://127.0.0.1:{server.server.http_port}/"
    assert _client("--count", "5", "--keepalive", "--url", url) == ["echo-a"] * 5
    records = _records("--count", "5", "--keepalive", "--url", url)
    assert [r.conn for r in records] == [1] * 5
    assert len({r.peer for r in records}) == 1  # one source port: one connection


def test_client_reports_errors_and_exits_zero() -> None:
    with socket.socket() as probe:  # a port that is surely closed: bound, never listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        url = f"http://127.0.0.1:{port}/"
        assert _client("--count", "2", "--url", url, "--timeout", "2") == ["ERROR refused"] * 2
        records = _records("--count", "2", "--url", url, "--timeout", "2")
    assert [(r.error, r.identity) for r in records] == [("refused", None)] * 2


def test_client_http_status_is_a_known_error_kind() -> None:
    def unavailable(sock: socket.socket, n: int) -> None:
        _read_head(sock)
        sock.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    with raw_server(unavailable, connections=2) as port:
        url = f"http://127.0.0.1:{port}/"
        assert _client("--url", url) == ["ERROR http-503"]
        [record] = _records("--url", url)
    assert (record.error, record.status, record.identity) == ("http_status", 503, None)


def test_client_deadline_is_reported_per_request(server: RunningServer) -> None:
    ticks = iter(range(0, 1000, 10))  # a clock that advances 10 s per reading: the deadline passes at once
    lines: list[str] = []
    args = echo.build_parser().parse_args(
        [
            "client",
            "--format",
            "json",
            "--count",
            "3",
            "--deadline",
            "1",
            "--tcp",
            f"127.0.0.1:{server.server.tcp_port}",
        ]
    )
    echo.run_client(args, out=lines.append, clock=lambda: float(next(ticks)))
    records = [parse_line(line) for line in lines]
    assert [(r.seq, r.error, r.latency_ms) for r in records if r] == [
        (s, "deadline", None) for s in (1, 2, 3)
    ]


FORGED = "web-1\nERROR timeout\nweb-2\u2028ERROR reset"


def test_hostile_reply_cannot_forge_outcomes() -> None:
    # A reply that carries newlines, a Unicode line separator and "ERROR" lines is one record, escaped.
    def hostile(sock: socket.socket, n: int) -> None:
        _read_head(sock)
        sock.sendall(_http_reply(json.dumps({"pod": FORGED, "peer": "web-1\nERROR x"}).encode()))

    with raw_server(hostile, connections=6) as port:
        url = f"http://127.0.0.1:{port}/"
        json_lines = _client("--format", "json", "--count", "3", "--url", url)
        text_lines = _client("--count", "3", "--url", url)
    assert len(json_lines) == 3 and all(line.isascii() and len(line.splitlines()) == 1 for line in json_lines)
    records = [parse_line(line) for line in json_lines]
    assert [(r.seq, r.identity, r.error, r.peer) for r in records if r] == [
        (seq, FORGED, None, None)
        for seq in (1, 2, 3)  # the identity kept as data; a non-address peer dropped
    ]
    # The older format cannot carry such an identity at all.
    assert text_lines == ["ERROR bad_response"] * 3


def test_hostile_banner_is_one_record() -> None:
    # A TCP banner is one line; control characters in it only separate its fields.
    def hostile(sock: socket.socket, n: int) -> None:
        sock.sendall(b"pod=web-1\rERROR\x0btimeout\x1cweb-2 peer=1.2.3.4:5\n")
        if sock.recv(100) == b"ping\n":
            sock.sendall(b"ping\n")

    with raw_server(hostile, connections=4) as port:
        target = f"127.0.0.1:{port}"
        records = _records("--count", "2", "--tcp", target)
        assert _client("--count", "2", "--tcp", target) == ["web-1"] * 2
    assert [(r.seq, r.identity, r.error, r.peer) for r in records] == [
        (s, "web-1", None, "1.2.3.4:5") for s in (1, 2)
    ]


def test_a_reply_that_names_no_pod_is_passed_on_as_an_escaped_excerpt() -> None:
    # busybox httpd's page "pod NAME IP" (no JSON, no X-Pod-Name): the dashboard attributes the excerpt.
    # A long hostile page is cut, and stays one record.
    pages = [b"pod wide-7 198.18.0.9\n", b"wide-8\nERROR timeout\n" + b"z" * 5000]

    def httpd(sock: socket.socket, n: int) -> None:
        _read_head(sock)
        sock.sendall(_http_reply(pages[n - 1]))

    with raw_server(httpd, connections=2) as port:
        lines = _client("--format", "json", "--count", "2", "--url", f"http://127.0.0.1:{port}/")
    assert len(lines) == 2 and all(len(line.splitlines()) == 1 for line in lines), lines
    first, second = (parse_line(line) for line in lines)
    assert first is not None and (first.identity, first.excerpt) == (None, "pod wide-7 198.18.0.9")
    assert second is not None and second.identity is None and second.excerpt is not None
    assert second.excerpt.startswith("wide-8\nERROR timeout\nz") and len(second.excerpt) == 256


def test_client_reads_at_most_a_capped_prefix_of_a_huge_reply() -> None:
    declared = 250 * 1024 * 1024
    sent: list[int] = []

    def huge(sock: socket.socket, n: int) -> None:
        _read_head(sock)
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\nX-Pod-Name: big-0\r\n\r\n"
        sock.sendall(head.encode())
        chunk = b"a" * 65536
        total = 0
        sock.settimeout(2)  # the client stops reading: sending blocks, then fails once it closes
        for _ in range(declared // len(chunk)):  # bounded even if the client read everything
            try:
                sock.sendall(chunk)
            except OSError:
                break
            total += len(chunk)
        sent.append(total)

    with raw_server(huge, connections=1) as port:
        tracemalloc.start()
        try:
            [record] = _records("--url", f"http://127.0.0.1:{port}/", "--timeout", "5")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert (record.identity, record.truncated, record.error) == ("big-0", True, None)
    assert peak < 4 * 1024 * 1024, peak
    assert sent and sent[0] < declared // 10  # the rest was never read, so never sent


def test_lines_are_flushed_as_each_request_finishes() -> None:
    # The second reply waits until the test has read the first line from the client's stdout pipe.
    gate = threading.Event()
    answered: list[int] = []

    def gated(sock: socket.socket, n: int) -> None:
        _read_head(sock)
        if n == 2:
            gate.wait(timeout=20)
        answered.append(n)
        sock.sendall(_http_reply(b"{}", f"X-Pod-Name: p-{n}\r\n"))

    with raw_server(gated, connections=2) as port:
        argv = [
            "client",
            "--format",
            "json",
            "--count",
            "2",
            "--timeout",
            "30",
            "--url",
            f"http://127.0.0.1:{port}/",
        ]
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.echo", *argv],
            cwd=ROOT,
            # Without PYTHONUNBUFFERED a piped stdout is block-buffered: only the client's flush sends a line.
            env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            first = parse_line(proc.stdout.readline())
            assert answered == [1]  # read while the second request was still waiting
            gate.set()
            second = parse_line(proc.stdout.readline())
            assert proc.wait(timeout=20) == 0
        finally:
            gate.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
    assert first is not None and second is not None
    assert [(first.seq, first.identity), (second.seq, second.identity)] == [(1, "p-1"), (2, "p-2")]


def test_client_rejects_unbounded_count() -> None:
    with pytest.raises(SystemExit):
        echo.build_parser().parse_args(["client", "--count", "0", "--url", "http://127.0.0.1:1/"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pod=a ip=1 node=n\n", "a"),
        ("pod=a ip=1 node=n peer=10.0.0.9:4000\n", "a"),
        ("token=abc\n", "abc"),
        ("echo\n", "anonymous"),
        ('{"pod": "x", "path": "/"}', "x"),
        ('{"path": "/"}', "anonymous"),
        ("[" * 5000, "anonymous"),
    ],
)
def test_parse_identity(text: str, expected: str) -> None:
    assert echo.parse_identity(text) == expected


@pytest.mark.parametrize(
    "exc",
    [
        TimeoutError(),
        ConnectionRefusedError(),
        ConnectionResetError(),
        BrokenPipeError(),
        socket.gaierror(-2, "Name or service not known"),
        OSError(113, "No route to host"),
        OSError(24, "Too many open files"),
        ValueError("x"),
        RuntimeError("anything else"),
        ProbeError("bad_response"),
    ],
)
def test_error_kinds_are_a_closed_set(exc: BaseException) -> None:
    assert error_kind(exc) in ERROR_KINDS


GOOD = Record(
    1, "http", identity="web-1", status=200, latency_ms=1.5, peer="[fd00::1]:80", local="[fd00::2]:47", conn=1
)


def test_record_round_trip() -> None:
    line = GOOD.json_line()
    assert "\n" not in line and parse_line(line) == GOOD
    assert json.loads(line) == {
        "seq": 1,
        "proto": "http",
        "identity": "web-1",
        "error": None,
        "status": 200,
        "latency_ms": 1.5,
        "peer": "[fd00::1]:80",
        "local": "[fd00::2]:47",
        "conn": 1,
        "truncated": False,
        "excerpt": None,
    }
    # A record of a client that predates the excerpt and the local address is still read.
    older = json.loads(line)
    del older["excerpt"], older["local"]
    assert parse_line(json.dumps(older)) == replace(GOOD, local=None)


def _tampered(**changes: object) -> str:
    doc = json.loads(GOOD.json_line())
    doc.update(changes)
    return json.dumps(doc)


@pytest.mark.parametrize(
    "line",
    [
        pytest.param("web-1", id="old-format"),
        pytest.param("ERROR timeout", id="old-error"),
        pytest.param("", id="empty"),
        pytest.param("[" * 1500, id="deep-nesting"),
        pytest.param("{" + " " * 5000 + "}", id="too-long"),
        pytest.param(_tampered(error="pwned"), id="unknown-error-kind"),
        pytest.param(_tampered(seq=True), id="bool-seq"),
        pytest.param(_tampered(seq=0), id="seq-zero"),
        pytest.param(_tampered(proto="sctp"), id="unknown-proto"),
        pytest.param(_tampered(peer="10.0.0.1"), id="peer-without-port"),
        pytest.param(_tampered(peer="fd00::1:80"), id="ipv6-peer-unbracketed"),
        pytest.param(_tampered(local="<b>x</b>:1"), id="local-not-an-address"),
        pytest.param(_tampered(identity="x" * 254), id="identity-too-long"),
        pytest.param(_tampered(identity=""), id="identity-empty"),
        pytest.param(_tampered(latency_ms=-1), id="negative-latency"),
        pytest.param(_tampered(status=99), id="bad-status"),
        pytest.param(_tampered(extra=1), id="extra-key"),
        pytest.param(_tampered(excerpt=""), id="excerpt-empty"),
        pytest.param(_tampered(excerpt="x" * 257), id="excerpt-too-long"),
        pytest.param(_tampered(excerpt=7), id="excerpt-not-text"),
        pytest.param(GOOD.json_line().replace('"conn":1,', ""), id="missing-key"),
        pytest.param(GOOD.json_line().replace("1.5", "NaN"), id="nan-latency"),
    ],
)
def test_parse_line_refuses_anything_but_a_record(line: str) -> None:
    assert parse_line(line) is None
