"""What the server saw: the source address the echo backend reports, beside the client's own (SNAT)."""

from __future__ import annotations

import pytest

from app.domain import Origin
from app.probe import seen
from app.probe.seen import MAX_ADDRESSES, PeerTally, address_of, judge


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("198.18.0.5:35320", "198.18.0.5"),
        ("[fd00::5]:80", "fd00::5"),
        ("198.18.0.1", "198.18.0.1"),
        ("<script>:1", None),
        ("", None),
        (None, None),
        ("1" * 80, None),
        ("999.1.1.1:80", None),
    ],
)
def test_address_of_keeps_only_real_addresses(peer: str | None, address: str | None) -> None:
    assert address_of(peer) == address


def test_a_pod_client_seen_as_itself_is_not_snat() -> None:
    tally = PeerTally()
    for port in (35320, 35326):
        tally.note(f"198.18.0.5:{port}")
    s = tally.seen("198.18.0.5", Origin.PROBE_POD)
    assert s.snat is False and s.peers == (("198.18.0.5", 2),) and s.note == seen.SAME


def test_a_host_network_client_seen_from_the_bridge_is_snat_with_the_node_reason() -> None:
    """Measured on the devcluster (iptables): a hostNetwork client 198.18.255.1 reaches the pod as 198.18.0.1,
    the CNI bridge, because kube-proxy marks ClusterIP traffic from outside the pod CIDR for masquerade."""
    tally = PeerTally()
    tally.note("198.18.0.1:1332")
    s = tally.seen("198.18.255.1", Origin.NODE)
    assert s.snat is True and s.note == seen.NODE_SNAT and "masquerades" in s.note


def test_a_pod_client_seen_as_another_address_is_flagged_with_the_pod_reason() -> None:
    s = judge((("198.18.0.1", 3), ("198.18.0.5", 1)), 0, "198.18.0.5", Origin.EXEC)
    assert s.snat is True and s.note == seen.POD_SNAT
    assert s.peers[0] == ("198.18.0.1", 3)


@pytest.mark.parametrize(
    ("peers", "client", "snat", "note"),
    [
        ((), "198.18.0.5", None, seen.NO_REPORT),
        ((("198.18.0.5", 1),), None, None, seen.UNKNOWN_CLIENT),
        ((("198.18.0.5", 1),), "not-an-ip", None, seen.UNKNOWN_CLIENT),
    ],
)
def test_nothing_to_compare_is_never_flagged(
    peers: tuple[tuple[str, int], ...], client: str | None, snat: bool | None, note: str
) -> None:
    s = judge(peers, 0, client, Origin.DASHBOARD)
    assert (s.snat, s.note) == (snat, note)


def test_reply_bodies_give_their_first_peer_and_hostile_ones_nothing() -> None:
    tally = PeerTally()
    tally.note_reply(b'{"pod": "web-1", "peer": "198.18.0.9:4000"}')
    tally.note_reply(b"pod=web-1 ip=198.18.0.11 peer=198.18.0.9:4001\n")
    tally.note_reply(b'{"peer": "<img src=x onerror=alert(1)>"}')
    tally.note_reply(b"xpeer=198.18.0.77:1")  # not the echo's field
    tally.note_reply(b"no field at all")
    assert tally.counts == {"198.18.0.9": 2}


def test_the_tally_is_bounded() -> None:
    tally = PeerTally()
    for i in range(MAX_ADDRESSES + 5):
        tally.note(f"198.18.1.{i}:80")
    tally.note("198.18.1.0:81")  # an address already counted still counts
    assert len(tally.counts) == MAX_ADDRESSES and tally.other == 5 and tally.counts["198.18.1.0"] == 2
    s = tally.seen("198.18.1.0", Origin.PROBE_POD)
    assert s.snat is True and s.reported == MAX_ADDRESSES + 6
