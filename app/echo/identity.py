"""Who this echo pod is, and how its replies say so (HTTP JSON body and header, TCP banner, UDP reply)."""

from __future__ import annotations

import hashlib
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

    def line(self) -> str:
        """The TCP banner / UDP reply, newline included."""
        if self.mode == "anonymous":
            return f"token={self.token}\n"
        if self.mode == "identical":
            return "echo\n"
        return f"pod={self.pod} ip={self.ip} node={self.node}\n"

    def http_body(self, method: str, path: str) -> dict[str, str]:
        if self.mode == "anonymous":
            return {"token": self.token, "path": path, "method": method}
        if self.mode == "identical":
            return {"path": path, "method": method}
        return {"pod": self.pod, "ip": self.ip, "node": self.node, "path": path, "method": method}

    def http_headers(self) -> dict[str, str]:
        return {"X-Pod-Name": self.pod} if self.mode == "normal" else {}
