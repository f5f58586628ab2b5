"""What the server saw: the source address each reply says the backend saw, beside the client's own.

svcscope's echo backend reports the address a connection came from (``peer=IP:PORT`` in a banner or
datagram, ``"peer": "IP:PORT"`` in its JSON; the echo client copies it into its records). A ClusterIP's
translation changes only the destination, so a pod client's address normally reaches the pod unchanged;
when the server saw another address, something rewrote the source (SNAT), and every rule that keys on the
client (ClientIP affinity, NetworkPolicies, the server's own logs) sees that address instead.

Pure. The addresses are whatever the backends said: shown as data, counted up to a bound.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from app.domain import Origin

MAX_ADDRESSES = 16  # distinct source addresses counted per run; more are counted as "other"
SCAN_BYTES = 4096  # of a reply, where the echo backend puts its peer field
_PEER = re.compile(rb'(?:(?<![A-Za-z0-9_-])peer=|"peer": ?")([0-9A-Fa-f.:\[\]]{1,60})')

NO_REPORT = (
    "the server did not report the source address it saw (only svcscope's echo backend does: "
    'peer=IP:PORT in its banner, "peer" in its JSON)'
)
UNKNOWN_CLIENT = "the client's own address is not known, so it cannot be compared"
SAME = (
    "no SNAT: the server saw the client's own address; a ClusterIP's translation changes only the destination"
)
# Why a node's traffic is rewritten: kube-proxy marks traffic to a ClusterIP that does not come from the
# pod network for masquerade (iptables KUBE-MARK-MASQ, nftables mark-for-masquerade), and the kernel then
# gives it the address of the interface it leaves through towards the pod.
NODE_SNAT = (
    "SNAT: a hostNetwork client sends from the node's own network, outside the pod CIDR, so kube-proxy "
    "masquerades its connections to a ClusterIP and they reach the pod from the address of the node's "
    "interface towards the pods"
)
POD_SNAT = (
    "SNAT: something rewrote this pod's source address — kube-proxy masquerades a pod that reaches itself "
    "through the Service (hairpin), and everything when masqueradeAll is set; a CNI or mesh may too"
)


@dataclass(frozen=True, slots=True)
class Seen:
    """The source addresses the server reported (address -> replies, most first) against the client's."""

    client_ip: str | None
    peers: tuple[tuple[str, int], ...]
    other: int  # replies whose address was beyond MAX_ADDRESSES distinct ones
    snat: bool | None  # None: nothing to compare (no report, or the client's address unknown)
    note: str

    @property
    def reported(self) -> int:
        return sum(n for _, n in self.peers) + self.other


def address_of(peer: str | None) -> str | None:
    """The IP of ``IP:PORT`` / ``[IPv6]:PORT`` (or a bare IP), normalised; None when it is not one."""
    if not peer or len(peer) > 60:
        return None
    text = peer.strip()
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


class PeerTally:
    """Counts the source addresses a run's replies report (bounded: MAX_ADDRESSES distinct ones)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.other = 0

    def note(self, peer: str | None) -> None:
        address = address_of(peer)
        if address is None:
            return
        if address in self.counts or len(self.counts) < MAX_ADDRESSES:
            self.counts[address] = self.counts.get(address, 0) + 1
        else:
            self.other += 1

    def note_reply(self, body: bytes) -> None:
        """The echo backend's peer field in a reply body (its first one), if any."""
        if b"peer" not in body:
            return
        found = _PEER.search(body[:SCAN_BYTES])
        if found is not None:
            self.note(found.group(1).decode("ascii"))

    def seen(self, client_ip: str | None, origin: Origin) -> Seen:
        return judge(tuple(self.counts.items()), self.other, client_ip, origin)


def judge(peers: tuple[tuple[str, int], ...], other: int, client_ip: str | None, origin: Origin) -> Seen:
    """Whether the server saw the client's own address, and why not when it did not."""
    ordered = tuple(sorted(peers, key=lambda p: (-p[1], p[0])))
    client = address_of(client_ip)
    if not ordered and not other:
        return Seen(client_ip, ordered, other, None, NO_REPORT)
    if client is None:
        return Seen(client_ip, ordered, other, None, UNKNOWN_CLIENT)
    if other == 0 and all(address == client for address, _ in ordered):
        return Seen(client_ip, ordered, other, False, SAME)
    return Seen(client_ip, ordered, other, True, NODE_SNAT if origin is Origin.NODE else POD_SNAT)
