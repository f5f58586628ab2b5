"""kube-proxy's endpoint choice per client, as tables.

Each case cites the upstream rule it mirrors: kube-proxy's pkg/proxy/topology.go (CategorizeEndpoints,
topologyModeFromHints, availableForTopology) and its iptables proxier's DROP/REJECT filter for Services
without (local) endpoints (pkg/proxy/iptables/proxier.go, "has no local endpoints" / "has no endpoints").
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import pytest

from app.domain import Endpoint, EndpointConditions, EndpointPort, EndpointSlice, ObjectKey, TargetRef
from app.routing import Client, Fate, Policy, TopologyMode, candidates, expect
from tests.unit.fakes import make_service
from tests.unit.routing.endpoints import NODED, SPREAD, ZONED, Candidate, ep


class Case(NamedTuple):
    doc: str
    endpoints: tuple[Candidate, ...]
    client: Client
    fate: Fate
    pods: set[str]
    mode: TopologyMode = TopologyMode.NONE
    policy: str = "Cluster"
    fallback: bool = False


CASES = [
    Case(
        "topology.go CategorizeEndpoints: without hints every Ready endpoint is a cluster endpoint",
        SPREAD, Client("n1", "a"), Fate.ROUTED, {"p1", "p2", "p3"},
    ),
    Case(
        "topologyModeFromHints: every ready endpoint has a zone hint and one matches the node's zone",
        ZONED, Client("n1", "a"), Fate.ROUTED, {"p1", "p4"}, TopologyMode.SAME_ZONE,
    ),
    Case(
        "topologyModeFromHints: zone hints all present but none for this zone -> no topology",
        ZONED, Client("n9", "z"), Fate.ROUTED, {"p1", "p2", "p3", "p4"},
    ),
    Case(
        "topologyModeFromHints: one ready endpoint without a zone hint disables zone hints (all or nothing)",
        (*ZONED, ep("p5", "n5", "a")), Client("n1", "a"), Fate.ROUTED, {"p1", "p2", "p3", "p4", "p5"},
    ),
    Case(
        "topologyModeFromHints: an unready endpoint without hints does not count",
        (*ZONED, ep("p5", "n5", "a", ready=False)), Client("n2", "b"), Fate.ROUTED, {"p2"},
        TopologyMode.SAME_ZONE,
    ),
    Case(
        "topologyModeFromHints: node hints on every ready endpoint and one for this node -> PreferSameNode",
        NODED, Client("n4", "a"), Fate.ROUTED, {"p4"}, TopologyMode.SAME_NODE,
    ),
    Case(
        "topologyModeFromHints: node hints, none for this node -> falls back to zone hints",
        NODED, Client("n8", "b"), Fate.ROUTED, {"p2"}, TopologyMode.SAME_ZONE,
    ),
    Case(
        "topologyModeFromHints: zone hints are ignored when the node has no zone label",
        ZONED, Client("n1", ""), Fate.ROUTED, {"p1", "p2", "p3", "p4"},
    ),
    Case(
        "CategorizeEndpoints: no Ready endpoint -> serving-terminating ones are used",
        (ep("p1", "n1", ready=False, serving=True, terminating=True),
         ep("p2", "n2", ready=False, serving=False)),
        Client("n1", "a"), Fate.ROUTED, {"p1"}, fallback=True,
    ),
    Case(
        "CategorizeEndpoints: one Ready endpoint left -> terminating ones get nothing",
        (ep("p1", "n1", ready=False, serving=True, terminating=True), ep("p2", "n2")),
        Client("n1", "a"), Fate.ROUTED, {"p2"},
    ),
    Case(
        "proxier.go: no usable endpoint anywhere -> REJECT (has no endpoints)",
        (ep("p1", "n1", ready=False, serving=False),), Client("n1", "a"), Fate.REJECTED, set(),
    ),
    Case(
        "CategorizeEndpoints, Local policy: only Ready endpoints on the client's node",
        SPREAD, Client("n2", "b"), Fate.ROUTED, {"p2"}, policy="Local",
    ),
    Case(
        "proxier.go, Local policy: endpoints elsewhere only -> DROP (has no local endpoints): a timeout",
        SPREAD, Client("n9", "a"), Fate.DROPPED, set(), policy="Local",
    ),
    Case(
        "CategorizeEndpoints, Local policy: local serving-terminating used when no local endpoint is ready",
        (ep("p1", "n1", ready=False, serving=True, terminating=True), ep("p2", "n2")),
        Client("n1", "a"), Fate.ROUTED, {"p1"}, policy="Local", fallback=True,
    ),
    Case(
        "CategorizeEndpoints, Local policy ignores topology hints for internal traffic",
        NODED, Client("n1", "a"), Fate.ROUTED, {"p1"}, policy="Local",
    ),
    Case(
        "our rule: with hints on every endpoint, an unknown client node/zone gives no expectation",
        ZONED, Client(None, None), Fate.UNKNOWN, set(),
    ),
    Case(
        "our rule: Local policy with an unknown client node gives no expectation",
        SPREAD, Client(None, None), Fate.UNKNOWN, set(), policy="Local",
    ),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.doc.split(":")[0] + f"-{i}" for i, c in enumerate(CASES)])
def test_expected_endpoints_follow_kube_proxy(case: Case) -> None:
    service = dataclasses.replace(make_service(), internal_traffic_policy=case.policy)
    got = expect(service, case.endpoints, case.client)
    assert got.fate is case.fate, case.doc
    assert got.pods == case.pods, case.doc
    assert got.mode is case.mode, case.doc
    assert got.policy is Policy(case.policy)
    assert got.terminating_fallback is case.fallback, case.doc
    assert got.reasons, "every expectation says why"


def test_dropped_and_rejected_say_so_in_words() -> None:
    local = dataclasses.replace(make_service(), internal_traffic_policy="Local")
    dropped = expect(local, SPREAD, Client("n9", "a"))
    assert "no endpoint on node n9" in dropped.reasons[0] and "timeout" in dropped.reasons[0]
    rejected = expect(make_service(), (ep("p1", "n1", ready=False, serving=False),), Client("n1", "a"))
    assert "refused" in rejected.reasons[0]


def test_ignored_hints_are_explained() -> None:
    got = expect(make_service(), (*ZONED, ep("p5", "n5", "a")), Client("n1", "a"))
    assert "zone hints ignored: endpoint p5 has none" in got.reasons
    got = expect(make_service(), ZONED, Client("n9", "z"))
    assert "zone hints ignored: no endpoint is hinted for zone z" in got.reasons


def test_client_ip_affinity_is_sticky_within_the_set() -> None:
    service = make_service(affinity="ClientIP", affinity_timeout_s=5)
    got = expect(service, ZONED, Client("n2", "b"))
    assert got.sticky_s == 5 and got.pods == {"p2"}
    assert any("5 s after its last new connection" in r for r in got.reasons)
    assert expect(make_service(), ZONED, Client("n2", "b")).sticky_s is None


def _slice(name: str, family: str, eps: list[Endpoint], port: str = "http") -> EndpointSlice:
    return EndpointSlice(
        key=ObjectKey("demo", name),
        service_name="web",
        address_type=family,
        endpoints=tuple(eps),
        ports=(EndpointPort(port, 8080),),
    )


def _endpoint(ip: str, pod: str, ns: str = "demo", **kw: object) -> Endpoint:
    return Endpoint(
        addresses=(ip,),
        conditions=EndpointConditions(True, None, None),
        node_name="n1",
        zone="a",
        target_ref=TargetRef("Pod", ns, pod),
        **kw,  # type: ignore[arg-type]
    )


def test_candidates_merge_slices_per_family_and_port() -> None:
    service = make_service()  # ClusterIP 198.19.0.50, namespace demo
    slices = [
        _slice("web-b", "IPv4", [_endpoint("198.18.0.11", "web-1"), _endpoint("198.18.0.10", "web-0")]),
        _slice("web-a", "IPv4", [_endpoint("198.18.0.10", "web-0", hints_zones=("a",))]),
        _slice("web-6", "IPv6", [_endpoint("fd00::1", "web-0")]),
        _slice("web-x", "IPv4", [_endpoint("198.18.0.12", "web-2")], port="metrics"),
        _slice("web-o", "IPv4", [_endpoint("198.18.0.13", "intruder", ns="other")]),
    ]
    got = candidates(service, slices, "http")
    assert [c.address for c in got] == ["198.18.0.10", "198.18.0.11", "198.18.0.13"]
    assert got[0].hints_zones == ("a",), "the first slice by name wins for a repeated address"
    assert got[2].pod is None, "a targetRef to a pod of another namespace is not the Service's pod"
    assert got[2].name == "198.18.0.13"
