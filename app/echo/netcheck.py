"""Ping, TCP connect and DNS lookups from wherever this runs, one JSON line per check (stdlib only).

The dashboard calls these functions in its own process; for another origin it sends this file's source to
``python3 -c`` in that pod, so any container with python3 can run it (svcscope's image, or an exec pod).
Each check has its own timeout. ICMP needs either a raw socket (the NET_RAW capability) or an ICMP datagram
socket (the process's group inside net.ipv4.ping_group_range); without both the ping is reported as
``no_net_raw``, never as a failure of the target.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import sys
import threading
import time


def _checksum(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return int(~total & 0xFFFF)


def ping(ip: str, timeout: float) -> dict[str, object]:
    """One ICMP echo to ``ip``: answer, no_answer, rejected (an ICMP error came back), no_net_raw or error."""
    sock = None
    raw = False
    for kind in (socket.SOCK_DGRAM, socket.SOCK_RAW):
        try:
            sock = socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP)
            raw = kind == socket.SOCK_RAW
            break
        except PermissionError:
            continue
        except OSError as exc:
            return {"result": "error", "detail": exc.strerror or type(exc).__name__}
    if sock is None:
        return {"result": "no_net_raw"}
    ident = os.getpid() & 0xFFFF
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    payload = b"svcscope"
    packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, 1) + payload
    start = time.monotonic()
    try:
        with sock:
            sock.sendto(packet, (ip, 0))
            while (left := timeout - (time.monotonic() - start)) > 0:
                ready, _, _ = select.select([sock], [], [], left)
                if not ready:
                    break
                data, addr = sock.recvfrom(2048)
                icmp = data[(data[0] & 0x0F) * 4 :] if raw else data
                if addr[0] != ip or len(icmp) < 8:
                    continue
                if icmp[0] == 0:
                    return {"result": "answer", "ms": round((time.monotonic() - start) * 1000, 3)}
                if icmp[0] == 3:
                    return {"result": "rejected", "detail": f"ICMP destination unreachable, code {icmp[1]}"}
    except OSError as exc:  # an ICMP error reported on the socket
        return {"result": "rejected", "detail": exc.strerror or type(exc).__name__}
    return {"result": "no_answer"}


def tcp(ip: str, port: int, timeout: float) -> dict[str, object]:
    """A TCP connect to ``ip:port`` (closed at once): connected, refused, timeout or error."""
    start = time.monotonic()
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return {"result": "connected", "ms": round((time.monotonic() - start) * 1000, 3)}
    except ConnectionRefusedError:
        return {"result": "refused"}
    except TimeoutError:
        return {"result": "timeout"}
    except OSError as exc:
        return {"result": "error", "detail": exc.strerror or type(exc).__name__}


def dns(name: str, timeout: float) -> dict[str, object]:
    """The addresses ``name`` resolves to through this process's resolver (its search path included)."""
    box: dict[str, object] = {}

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(name, None, 0, socket.SOCK_STREAM)
            box["addresses"] = sorted({str(i[4][0]) for i in infos})
        except socket.gaierror as exc:
            box["error"] = exc.errno

    start = time.monotonic()
    worker = threading.Thread(target=lookup, daemon=True)  # getaddrinfo has no timeout of its own
    worker.start()
    worker.join(timeout)
    ms = round((time.monotonic() - start) * 1000, 3)
    if "addresses" in box:
        return {"result": "resolved", "addresses": box["addresses"], "ms": ms}
    if "error" in box:
        gone = box["error"] in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME))
        return {"result": "not_found" if gone else "error", "detail": f"getaddrinfo error {box['error']}"}
    return {"result": "timeout"}


def main(argv: list[str]) -> int:
    """``--timeout S --ping IP --tcp IP:PORT --dns NAME ...``: each check in order, one JSON line each."""
    timeout = 1.0
    checks: list[tuple[str, str]] = []
    it = iter(argv)
    for flag in it:
        value = next(it, "")
        if flag == "--timeout":
            timeout = min(max(float(value), 0.1), 5.0)
        elif flag in ("--ping", "--tcp", "--dns"):
            checks.append((flag[2:], value))
    for kind, target in checks:
        if kind == "ping":
            out = ping(target, timeout)
        elif kind == "tcp":
            host, _, port = target.rpartition(":")
            out = tcp(host, int(port), timeout)
        else:
            out = dns(target, timeout)
        print(json.dumps({"check": kind, "target": target, **out}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
