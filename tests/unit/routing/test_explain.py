"""The rule in effect, in words.

Hint population follows the EndpointSlice controller: k8s.io/endpointslice trafficdist (PreferSameZone /
PreferClose write one zone hint per ready endpoint that has a zone; PreferSameNode also a node hint) and
topologycache for `service.kubernetes.io/topology-mode: Auto`, which the reconciler prefers over the field.
"""

from __future__ import annotations

import dataclasses

import pytest

from app.routing import Policy, explain
from tests.unit.fakes import make_service
from tests.unit.routing.endpoints import NODED, SPREAD, ZONED, ep


def svc(distribution: str | None = None, annotation: str | None = None, policy: str = "Cluster"):
    annotations = {"service.kubernetes.io/topology-mode": annotation} if annotation else {}
    return dataclasses.replace(
        make_service(annotations=annotations),
        traffic_distribution=distribution,
        internal_traffic_policy=policy,
    )


CASES = [
    ("no rule", svc(), SPREAD, (), "none: every ready endpoint, cluster-wide", []),
    ("PreferSameZone with hints", svc("PreferSameZone"), ZONED, (), "trafficDistribution PreferSameZone",
     ["zone hints on every ready endpoint: a client prefers endpoints in its own zone"]),
    ("PreferClose is the old name", svc("PreferClose"), ZONED, (), "trafficDistribution PreferClose",
     ["PreferClose is the deprecated name of PreferSameZone"]),
    ("PreferSameNode with hints", svc("PreferSameNode"), NODED, (), "trafficDistribution PreferSameNode",
     ["node hints on every ready endpoint: a client prefers endpoints on its own node"]),
    ("one endpoint without a hint", svc("PreferSameZone"), (*ZONED, ep("p5", "n5")), (),
     "trafficDistribution PreferSameZone", ["zone hints ignored: endpoint p5 has none"]),
    ("annotation wins over the field", svc("PreferSameNode", "Auto"), ZONED, (),
     "topology-mode Auto (the annotation wins over trafficDistribution)",
     ["trafficDistribution PreferSameNode is ignored: the topology-mode annotation is set"]),
    ("Auto with fewer endpoints than zones", svc(annotation="Auto"), SPREAD[:2], ("a", "b", "c"),
     "topology-mode Auto (the annotation wins over trafficDistribution)",
     ["topology hints not populated: fewer endpoints (2) than zones (3)"]),
    ("endpoint without a zone", svc("PreferSameZone"), (ep("p1", "n1", ""),), (),
     "trafficDistribution PreferSameZone", ["topology hints not populated: endpoint p1 has no zone"]),
    ("no ready endpoint", svc(), (ep("p1", "n1", ready=False, serving=True, terminating=True),), (),
     "none: every ready endpoint, cluster-wide",
     ["no ready endpoints: the serving-terminating ones are used"]),
    ("Local policy", svc("PreferSameZone", policy="Local"), ZONED, (), "trafficDistribution PreferSameZone",
     ["with Local policy kube-proxy ignores topology hints for cluster-internal traffic"]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "service", "endpoints", "zones", "governing", "expected"), CASES)
def test_rule_in_effect(name, service, endpoints, zones, governing, expected) -> None:
    report = explain(service, endpoints, zones)
    assert report.governing == governing, name
    for line in expected:
        assert line in report.lines, (name, report.lines)
    assert report.internal_traffic_policy is Policy(service.internal_traffic_policy)
