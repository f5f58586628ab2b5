from __future__ import annotations

import dataclasses

from app.domain import ObjectKey
from app.kube import convert
from app.kube.cache import Change, Kind, ServiceCache
from tests.unit.kube.objects import demo_cache, endpoint, eps, fill, pod, svc

K = ObjectKey


def test_synced_only_when_every_resource_and_scope_listed_or_forbidden():
    cache = ServiceCache(["a", "b"])
    assert not cache.synced
    for kind in Kind:
        cache.mark_synced(kind, "a")
    assert not cache.synced
    for kind in (Kind.SERVICES, Kind.PODS):
        cache.mark_synced(kind, "b")
    cache.set_problem(Kind.ENDPOINTSLICES, "b", "Forbidden ...", forbidden=True)
    assert cache.synced
    assert [(p.kind, p.scope) for p in cache.problems()] == [(Kind.ENDPOINTSLICES, "b")]
    cache.mark_synced(Kind.ENDPOINTSLICES, "b")
    assert cache.problems() == []


def test_indexes_follow_upserts_and_deletes():
    cache = demo_cache()
    web = K("shop", "web")
    assert [s.key.name for s in cache.slices_for(web)] == ["web-abc", "web-def"]
    assert cache.endpoint_counts(web).ready == 2 and cache.endpoint_counts(web).total == 3
    assert [p.key.name for p in cache.pods_matching("shop", {"app": "web"})] == [
        "web-1",
        "web-2",
        "web-3",
        "web-4",
    ]
    assert cache.pods_matching("shop", {"app": "web", "x": "y"}) == []
    assert cache.pods_matching("other", {"app": "web"}) == []
    assert cache.pod_by_ip("198.18.0.12").key.name == "web-2"  # type: ignore[union-attr]

    # a pod changes labels: the label index follows
    cache.upsert_pod(convert.pod_from_api(pod("web-4", "shop", ip="198.18.0.14", labels={"app": "other"})))
    assert "web-4" not in [p.key.name for p in cache.pods_matching("shop", {"app": "web"})]
    # a slice moves to another service and then goes away: counts follow
    cache.upsert_slice(convert.slice_from_api(eps("web-def", "db", [endpoint("198.18.0.13")], "shop")))
    assert cache.endpoint_counts(web).total == 2 and cache.endpoint_counts(K("shop", "db")).total == 1
    cache.delete_slice(K("shop", "web-def"))
    assert cache.endpoint_counts(K("shop", "db")).total == 0
    cache.delete_pod(K("shop", "web-2"))
    assert cache.pod_by_ip("198.18.0.12") is None
    cache.delete_service(web)
    assert cache.service(web) is None
    assert cache.knows_namespace("shop")


def test_pods_for_service_uses_target_refs_then_selector():
    cache = demo_cache()
    names = [p.key.name for p in cache.pods_for_service(K("shop", "web"))]
    assert names == ["web-1", "web-2", "web-3", "web-4"]
    assert cache.pods_for_service(K("shop", "db")) == []


def test_replace_is_scoped_and_emits_one_change():
    cache = ServiceCache(["a", "b"])
    fill(cache, services=[svc("x", "a"), svc("y", "b")])
    seen: list[Change] = []
    unsubscribe = cache.subscribe(seen.append)
    cache.replace(Kind.SERVICES, "a", [(convert.service_from_api(svc("z", "a")), None)])
    assert [s.key for s in cache.services()] == [K("a", "z"), K("b", "y")]
    assert len(seen) == 1 and seen[0].key is None and seen[0].namespace == "a"
    unsubscribe()
    cache.delete_service(K("a", "z"))
    assert len(seen) == 1
    assert not cache.knows_namespace("c")


def test_subscribers_see_versions_and_a_broken_subscriber_does_not_break_writes():
    cache = ServiceCache()

    def broken(change: Change) -> None:
        raise RuntimeError("boom")

    seen: list[Change] = []
    cache.subscribe(broken)
    cache.subscribe(seen.append)
    fill(cache, services=[svc("a")], slices=[eps("a-1", "a", [])])
    assert [c.version for c in seen] == [1, 2]
    assert seen[1].kind is Kind.ENDPOINTSLICES and seen[1].service == K("default", "a")


def test_node_addresses_and_likely_gateways_from_the_pods():
    cache = ServiceCache()
    web = convert.pod_from_api(pod("web-0", ip="198.18.0.10"))
    other_node = convert.pod_from_api(pod("web-1", ip="198.18.1.7"))
    host_net = convert.pod_from_api(pod("proxy-0", ip="198.18.255.1"))
    cache.upsert_pod(dataclasses.replace(web, host_ip="198.18.255.1"))
    cache.upsert_pod(dataclasses.replace(other_node, host_ip="198.18.255.2"))
    cache.upsert_pod(dataclasses.replace(host_net, host_ip="198.18.255.1"))  # hostNetwork: no gateway
    assert cache.host_addresses() == {"198.18.255.1", "198.18.255.2"}
    assert cache.gateway_addresses() == {"198.18.0.1", "198.18.1.1"}
    # A pod that holds the first address is a pod, not a gateway; gone pods take their addresses along.
    cache.upsert_pod(convert.pod_from_api(pod("first", ip="198.18.1.1")))
    cache.delete_pod(ObjectKey("default", "web-0"))
    assert cache.gateway_addresses() == set() and cache.host_addresses() == {"198.18.255.1", "198.18.255.2"}
