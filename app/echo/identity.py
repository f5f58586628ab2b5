"""Who this echo pod is, and how its replies say so (HTTP JSON body and header, TCP banner, UDP reply).

Every reply also carries ``peer``: the client address (IP:port) the pod saw. Compared with the client's own
address it shows source NAT (a hostNetwork client, traffic entering through a NodePort). It names the
client, never the answering pod, and changes with every connection; app.probe.attribution looks past it.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Literal

Mode = Literal["normal", "anonymous", "identical"]
MODES: tuple[Mode, ...] = ("normal", "anonymous", "identical")


@dataclass(frozen=True, slots=True)
class Identity:
    pod: str
    ip: str
    node: str
    mode: Mode = "normal"

    @property
    def token(self) -> str:
        # Stable per pod but not the name itself: lets a prober tell pods apart without being told who is who.
        return hashlib.sha256(f"{self.pod}|{self.ip}".encode()).hexdigest()[:16]

    def line(self, peer: str | None = None) -> str:
        """The TCP banner / UDP reply, newline included; ``peer=IP:PORT`` last when known."""
        if self.mode == "anonymous":
            text = f"token={self.token}"
        elif self.mode == "identical":
            text = "echo"
        else:
            text = f"pod={self.pod} ip={self.ip} node={self.node}"
        return f"{text} peer={peer}\n" if peer else text + "\n"

    def http_body(self, method: str, path: str, peer: str | None = None) -> dict[str, str]:
        if self.mode == "anonymous":
            body = {"token": self.token, "path": path, "method": method}
        elif self.mode == "identical":
            body = {"path": path, "method": method}
        else:
            body = {"pod": self.pod, "ip": self.ip, "node": self.node, "path": path, "method": method}
        if peer:
            body["peer"] = peer
        return body

    def http_headers(self) -> dict[str, str]:
        return {"X-Pod-Name": self.pod} if self.mode == "normal" else {}


def format_peer(address: object) -> str | None:
    """``IP:PORT`` (``[IPv6]:PORT``) of a socket peer address; None when the socket has none."""
    if not isinstance(address, tuple) or len(address) < 2:
        return None
    host, port = address[0], address[1]
    try:
        ip = ipaddress.ip_address(str(host).partition("%")[0])
    except ValueError:
        return None
    # A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; report the IPv4 address the client knows.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
