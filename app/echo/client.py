"""The echo client: a bounded number of HTTP, TCP or UDP requests, each on a new connection by default
(kube-proxy balances connections, not requests), one output line per request."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit


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
        host, port = split_hostport(args.tcp)
        probes.append((lambda: tcp_once(host, port, args.timeout), lambda: None))
    if args.udp:
        uhost, uport = split_hostport(args.udp)
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
