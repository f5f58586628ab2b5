"""One output line per request of the echo client, and the strict parser for the side that reads them.

A remote probe origin (a probe pod, or exec into a pod) runs the client and reads its stdout. The reply
of a probed backend is data chosen by whoever runs that backend, so nothing of it may reach the output
unescaped: a reply that contains newlines and ``ERROR …`` lines must not become extra outcomes.

``--format json`` prints one JSON object per line, with ASCII-only escaping (so neither ``\\n`` nor
U+2028 can split a record) and keys always present::

    {"seq":1,"proto":"http","identity":"echo-a","error":null,"status":200,"latency_ms":1.234,
     "peer":"10.244.1.7:40112","local":"10.244.1.7:40112","conn":1,"truncated":false,"excerpt":null}

A reply that names no pod (any backend but svcscope's echo) carries its first characters as ``excerpt``,
so that the dashboard can attribute it as it attributes its own replies (pod name or IP in the text).

``--format lines`` is the older format, one answering identity or ``ERROR <kind>`` per line; identities
that are not a single safe token are reported as ``ERROR bad_response`` so that they cannot forge lines.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from dataclasses import asdict, dataclass
from typing import Literal

Proto = Literal["http", "tcp", "udp"]
PROTOS: tuple[Proto, ...] = ("http", "tcp", "udp")

# The only error kinds a record may carry; the first eight are the dashboard's own (app.probe.wire).
ERROR_KINDS = frozenset(
    {
        "timeout",
        "refused",
        "reset",
        "closed",
        "unreachable",
        "bad_response",
        "os_error",
        "error",
        "dns",  # the target name did not resolve
        "http_status",  # an HTTP reply other than 200; ``status`` says which
        "deadline",  # not sent: the run's deadline had passed
    }
)
MAX_IDENTITY_CHARS = 253  # a pod name is a DNS subdomain: at most 253 characters
# The start of a reply that names no pod (a backend other than svcscope's echo): the dashboard attributes it
# itself, as it does its own replies. Escaped, it stays well inside a line.
MAX_EXCERPT_CHARS = 256
# A record is far shorter; the parser refuses anything longer without decoding it. An identity and an
# excerpt escaped as \uXXXX throughout take about 3 KiB.
MAX_LINE_CHARS = 4096
# Pod names, tokens and IP addresses: what an identity can be when it is to name a pod.
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")


@dataclass(frozen=True, slots=True)
class Record:
    """What one request got: who answered (as the reply said), or the kind of failure."""

    seq: int  # 1.., per target
    proto: Proto
    identity: str | None = None  # the pod name (or token) the reply gave; None when it gave none
    error: str | None = None  # one of ERROR_KINDS
    status: int | None = None  # HTTP only
    latency_ms: float | None = None  # None when the request was never sent
    peer: str | None = None  # the client address the server saw (svcscope's echo reports it)
    # The client's own address on that connection: the source before any NAT, so the dashboard learns a
    # probe pod's address from its output even when the pod is gone before its status was read.
    local: str | None = None
    conn: int = 0  # connection number (1..); several requests share one with keep-alive
    truncated: bool = False  # the reply was longer than the client reads
    excerpt: str | None = None  # the reply's start when it gave no identity (MAX_EXCERPT_CHARS at most)

    def __post_init__(self) -> None:
        # Checked on both sides: the client never writes, and the parser never returns, a malformed record.
        if self.seq < 1 or self.conn < 0 or self.proto not in PROTOS:
            raise ValueError("bad seq, conn or proto")
        if self.error is not None and self.error not in ERROR_KINDS:
            raise ValueError(f"unknown error kind {self.error!r}")
        if self.identity is not None and not 0 < len(self.identity) <= MAX_IDENTITY_CHARS:
            raise ValueError("identity empty or too long")
        if self.status is not None and not 100 <= self.status <= 999:
            raise ValueError("bad HTTP status")
        if self.latency_ms is not None and not (math.isfinite(self.latency_ms) and self.latency_ms >= 0):
            raise ValueError("bad latency")
        if self.peer is not None and not valid_peer(self.peer):
            raise ValueError("bad peer address")
        if self.local is not None and not valid_peer(self.local):
            raise ValueError("bad local address")
        if self.excerpt is not None and not 0 < len(self.excerpt) <= MAX_EXCERPT_CHARS:
            raise ValueError("excerpt empty or too long")

    def json_line(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=True, allow_nan=False)

    def text_line(self) -> str:
        """The older one-token format: the identity, ``anonymous`` or ``ERROR <kind>``."""
        if self.error == "http_status":
            return f"ERROR http-{self.status}"
        if self.error is not None:
            return f"ERROR {self.error}"
        if self.identity is None:
            return "anonymous"
        return self.identity if _TOKEN.fullmatch(self.identity) else "ERROR bad_response"


def safe_identity(value: str | None) -> str | None:
    """An identity a record may carry: at most MAX_IDENTITY_CHARS of it (JSON escaping does the rest)."""
    if not value:
        return None
    return value[:MAX_IDENTITY_CHARS]


def valid_peer(text: str) -> bool:
    """``IP:PORT`` or ``[IPv6]:PORT``, as the echo server writes it."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        return False
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        ip = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        return False
    return bracketed == (ip.version == 6)


_FIELDS: dict[str, type | tuple[type, ...]] = {
    "seq": int,
    "proto": str,
    "identity": (str, type(None)),
    "error": (str, type(None)),
    "status": (int, type(None)),
    "latency_ms": (int, float, type(None)),
    "peer": (str, type(None)),
    "local": (str, type(None)),
    "conn": int,
    "truncated": bool,
    "excerpt": (str, type(None)),
}
# A client of an older image prints neither excerpt nor local address; its records are read all the same.
_OLDER_FIELDS = frozenset(_FIELDS) - {"excerpt", "local"}


def parse_line(line: str) -> Record | None:
    """A record from one ``--format json`` output line; None for anything else (never raises)."""
    if len(line) > MAX_LINE_CHARS:
        return None
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError):  # a line of "[[[[…" fails on depth, cleanly
        return None
    if not isinstance(doc, dict) or set(doc) not in (set(_FIELDS), _OLDER_FIELDS):
        return None
    for key, types in _FIELDS.items():
        value = doc.get(key)
        # bool is an int to isinstance; only "truncated" may be one.
        if not isinstance(value, types) or (isinstance(value, bool) and key != "truncated"):
            return None
    try:
        return Record(**doc)
    except (TypeError, ValueError):
        return None
