"""Expected versus observed, and the most likely cause when they differ."""

from __future__ import annotations

import dataclasses

import pytest

from app.routing import Client, expect, judge, routing_of, zone_of
from tests.unit.fakes import make_service
from tests.unit.routing.endpoints import SPREAD, ZONED

LOCAL = dataclasses.replace(make_service(), internal_traffic_policy="Local")
CLIENT_A = Client("n1", "a")

CASES = [
    ("only zone-a pods answered", make_service(), ZONED, CLIENT_A, {"p1": 5, "p4": 5}, {}, False, True,
     "as expected"),
    ("a zone-b pod answered", make_service(), ZONED, CLIENT_A, {"p1": 5, "p2": 1}, {}, False, False,
     "pod p2 answered but should not (not hinted for the client's zone)"),
    ("endpoint change explains it", make_service(), ZONED, CLIENT_A, {"p2": 1}, {}, True, False,
     "the endpoints changed during the run"),
    ("dropped as expected", LOCAL, SPREAD, Client("n9", "a"), {}, {"timeout": 4}, False, True,
     "dropped as expected (no local endpoint on node n9)"),
    ("refused is not a drop", LOCAL, SPREAD, Client("n9", "a"), {}, {"refused": 4}, False, False,
     "failures other than timeouts"),
    ("answered although dropped", LOCAL, SPREAD, Client("n9", "a"), {"p1": 2}, {}, False, False,
     "p1 answered although traffic should be dropped"),
    ("timeouts where pods should answer", make_service(), SPREAD, CLIENT_A, {"p1": 3}, {"timeout": 2}, False,
     False, "2 request(s) failed although 3 endpoint(s) should answer"),
    ("ClientIP spread", make_service(affinity="ClientIP", affinity_timeout_s=5), SPREAD, CLIENT_A,
     {"p1": 3, "p2": 3}, {}, False, False, "ClientIP affinity should keep one client on one pod"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "service", "eps", "client", "hits", "errors", "changed", "ok", "says"), CASES
)
def test_verdicts(name, service, eps, client, hits, errors, changed, ok, says) -> None:
    verdict = judge(expect(service, eps, client), hits, errors, endpoints_changed=changed)
    assert verdict.as_expected is ok, (name, verdict.lines)
    assert any(says in line for line in verdict.lines), (name, verdict.lines)


def test_kube_proxy_lag_is_the_default_cause() -> None:
    verdict = judge(expect(make_service(), ZONED, CLIENT_A), {"p3": 1}, {})
    assert "kube-proxy has not yet programmed" in verdict.lines[0]


def test_routing_record_carries_the_expected_set_and_the_verdict() -> None:
    r = routing_of(expect(make_service(), ZONED, CLIENT_A), CLIENT_A, {"p1": 2, "p4": 1}, {})
    assert (r.client_node, r.client_zone, r.fate) == ("n1", "a", "routed")
    assert r.expected == ("p1", "p4") and r.as_expected
    assert r.reasons[0].startswith("zone hints: only endpoints hinted for zone a")


ZONE_CASES = [
    ("the Node's label wins", "n1", "z", "z"),
    ("an unlabelled Node has no zone", "n1", "", ""),
    ("no Node: the zone an endpoint on that node carries", "n1", None, "a"),
    ("no Node and no endpoint there: unknown", "n9", None, None),
    ("no client node: unknown", None, "z", None),
]


@pytest.mark.parametrize(("name", "node", "node_zone", "zone"), ZONE_CASES)
def test_zone_of_client_node(name, node, node_zone, zone) -> None:
    assert zone_of(node, node_zone, SPREAD) == zone, name


def test_clientip_pods_beyond_the_fresh_picks_are_still_flagged() -> None:
    sticky = expect(make_service(affinity="ClientIP", affinity_timeout_s=5), SPREAD, CLIENT_A)
    moved_once = judge(sticky, {"p1": 3, "p2": 3}, {}, fresh_picks=1)
    assert moved_once.as_expected, moved_once.lines
    assert "moved pod 1 time(s), each after an idle gap longer than the timeout" in moved_once.lines[0]
    too_many = judge(sticky, {"p1": 3, "p2": 3, "p3": 1}, {}, fresh_picks=1)
    assert not too_many.as_expected
