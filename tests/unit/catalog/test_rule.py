"""The Service page's "routing rule in effect": per node of the cluster, what its kube-proxy may pick."""

from __future__ import annotations

from typing import Any

import pytest

from app.catalog.rule import ENDPOINTS_SHOWN, NODES_SHOWN, clip, rule_view
from app.domain import ObjectKey
from app.kube import convert
from app.kube.cache import ALL_NAMESPACES, NODES_FORBIDDEN, Kind, ServiceCache
from tests.unit.kube.objects import endpoint, eps, fill, node, svc

NODES = {"n1": "zone-a", "n2": "zone-b", "n3": "zone-a"}


def placed(ip: str, pod: str, on: str, *, hint: bool = False, **conditions: bool) -> dict[str, Any]:
    ep = endpoint(ip, pod, "default", **conditions)
    ep["nodeName"], ep["zone"] = on, NODES[on]
    if hint:
        ep["hints"] = {"forZones": [{"name": NODES[on]}], "forNodes": [{"name": on}]}
    return ep


def cache_with(spec: dict[str, Any], endpoints: list[dict[str, Any]], *, nodes: bool = True) -> ServiceCache:
    cache = ServiceCache()
    fill(cache, services=[svc("web", **spec)], slices=[eps("web-1", "web", endpoints)])
    if nodes:
        objs = [convert.node_from_api(node(n, z)) for n, z in NODES.items()]
        cache.replace(Kind.NODES, ALL_NAMESPACES, objs)
        cache.mark_synced(Kind.NODES, ALL_NAMESPACES)
    return cache


TWO = [placed("198.18.0.10", "web-a", "n1"), placed("198.18.0.11", "web-b", "n2")]
HINTED = [placed("198.18.0.10", "web-a", "n1", hint=True), placed("198.18.0.11", "web-b", "n2", hint=True)]

CASES = [
    ("Cluster policy: every node picks from every ready endpoint", {}, TWO,
     {"n1": ("routed", ("web-a", "web-b")), "n2": ("routed", ("web-a", "web-b")),
      "n3": ("routed", ("web-a", "web-b"))}),
    ("Local policy: a node without an endpoint drops (kube-proxy CategorizeEndpoints, Local)",
     {"internalTrafficPolicy": "Local"}, TWO,
     {"n1": ("routed", ("web-a",)), "n2": ("routed", ("web-b",)), "n3": ("dropped", ())}),
    ("PreferSameNode: node hints on every endpoint; n3 has none hinted for it, so zone hints apply",
     {"trafficDistribution": "PreferSameNode"}, HINTED,
     {"n1": ("routed", ("web-a",)), "n2": ("routed", ("web-b",)), "n3": ("routed", ("web-a",))}),
    ("no ready endpoint anywhere: refused", {}, [placed("198.18.0.10", "web-a", "n1", ready=False,
                                                      serving=False)],
     {"n1": ("rejected", ()), "n2": ("rejected", ()), "n3": ("rejected", ())}),
]  # fmt: skip


@pytest.mark.parametrize(("name", "spec", "endpoints", "want"), CASES)
def test_per_node_expectations(name, spec, endpoints, want) -> None:
    svc_ = cache_with(spec, endpoints).service(ObjectKey("default", "web"))
    assert svc_ is not None
    view = rule_view(cache_with(spec, endpoints), svc_)
    got = {r.node: (r.fate, r.endpoints) for r in view.nodes}
    assert got == want, name
    assert view.nodes_unknown is None and all(r.ready for r in view.nodes)


def test_dropped_nodes_say_so() -> None:
    cache = cache_with({"internalTrafficPolicy": "Local"}, TWO)
    view = rule_view(cache, cache.services()[0])
    (n3,) = [r for r in view.nodes if r.node == "n3"]
    assert n3.summary == "dropped: no local endpoint"
    assert "no endpoint on node n3" in n3.reason


def test_without_node_permission_the_endpoints_nodes_stand_in() -> None:
    cache = cache_with({"internalTrafficPolicy": "Local"}, TWO, nodes=False)
    cache.set_problem(Kind.NODES, ALL_NAMESPACES, "Forbidden", forbidden=True)
    view = rule_view(cache, cache.services()[0])
    assert view.nodes_unknown == NODES_FORBIDDEN
    assert [(r.node, r.zone, r.ready) for r in view.nodes] == [("n1", "zone-a", None), ("n2", "zone-b", None)]


def test_the_annotation_wins_and_a_long_value_is_cut() -> None:
    auto = {"metadata": {"annotations": {"service.kubernetes.io/topology-mode": "Auto"}}}
    s = svc("web", trafficDistribution="PreferSameZone")
    s["metadata"]["annotations"] = auto["metadata"]["annotations"]
    cache = ServiceCache()
    fill(cache, services=[s], slices=[eps("web-1", "web", TWO)])
    view = rule_view(cache, cache.services()[0])
    assert view.report.governing.startswith("topology-mode Auto")
    assert view.annotation == "Auto"
    assert clip("x" * 500) == "x" * 120 + "… (380 more characters)"


def test_big_services_and_clusters_are_bounded() -> None:
    many = [placed(f"198.18.{i // 200}.{i % 200 + 2}", f"web-{i}", "n1") for i in range(ENDPOINTS_SHOWN + 5)]
    cache = ServiceCache()
    fill(cache, services=[svc("web")], slices=[eps("web-1", "web", many)])
    cache.replace(Kind.NODES, ALL_NAMESPACES, [convert.node_from_api(node(f"n{i:03}")) for i in range(60)])
    cache.mark_synced(Kind.NODES, ALL_NAMESPACES)
    view = rule_view(cache, cache.services()[0])
    assert (len(view.endpoints), view.more_endpoints) == (ENDPOINTS_SHOWN, 5)
    assert (len(view.nodes), view.more_nodes) == (NODES_SHOWN, 60 - NODES_SHOWN)
    assert (len(view.nodes[0].endpoints), view.nodes[0].more) == (ENDPOINTS_SHOWN, 5)
