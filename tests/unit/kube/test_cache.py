from __future__ import annotations

import dataclasses

from app.domain import Node, NodeAddress, ObjectKey
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


def test_removed_ready_addresses_are_remembered_until_back_or_old():
    from app.domain import ServiceKey

    clock = [1000.0]
    cache = ServiceCache(clock=lambda: clock[0])
    key = ServiceKey("default", "web")

    def put(name: str, *endpoints: dict) -> None:  # type: ignore[type-arg]
        cache.upsert_slice(convert.slice_from_api(eps(name, "web", list(endpoints))))

    put("web-a", endpoint("198.18.0.1", "p1"), endpoint("198.18.0.2", "p2"))
    assert cache.removed_endpoints(key) == []
    clock[0] = 1010.0
    # p2 is replaced by p3: terminating first (no longer ready), then gone.
    put("web-a", endpoint("198.18.0.1", "p1"), endpoint("198.18.0.2", "p2", ready=False))
    put("web-a", endpoint("198.18.0.1", "p1"), endpoint("198.18.0.3", "p3"))
    (gone,) = cache.removed_endpoints(key)
    assert (gone.ip, gone.pod, gone.at) == ("198.18.0.2", "p2", 1010.0)
    # An address moving to another slice of the same Service did not leave it.
    put("web-b", endpoint("198.18.0.1", "p1"))
    put("web-a", endpoint("198.18.0.3", "p3"))
    assert [r.ip for r in cache.removed_endpoints(key)] == ["198.18.0.2"]
    # A deleted slice removes its addresses; the newest comes first.
    clock[0] = 1020.0
    cache.delete_slice(ObjectKey("default", "web-b"))
    assert [r.ip for r in cache.removed_endpoints(key)] == ["198.18.0.1", "198.18.0.2"]
    assert [r.ip for r in cache.removed_endpoints(key, within_s=5.0)] == ["198.18.0.1"]
    # Back again: no longer "removed".
    put("web-a", endpoint("198.18.0.3", "p3"), endpoint("198.18.0.1", "p1"))
    assert [r.ip for r in cache.removed_endpoints(key)] == ["198.18.0.2"]
    clock[0] = 5000.0
    assert cache.removed_endpoints(key) == []
    cache.delete_service(key)
    assert cache.removed_endpoints(key) == []


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


def test_node_addresses_come_from_the_nodes_too_so_a_node_without_a_watched_pod_is_known():
    cache = ServiceCache()
    quiet = Node(
        "quiet",
        zone=None,
        region=None,
        addresses=(
            NodeAddress("InternalIP", "198.18.255.9"),
            NodeAddress("ExternalIP", "2001:DB8:0::9"),
            NodeAddress("Hostname", "quiet"),  # a name, not an address
            NodeAddress("InternalIP", "not-an-ip"),
        ),
        ready=True,
    )
    cache.upsert_pod(
        dataclasses.replace(convert.pod_from_api(pod("web-0", ip="198.18.0.10")), host_ip="198.18.255.1")
    )
    assert cache.host_addresses() == {"198.18.255.1"}
    cache.upsert_node(quiet)
    assert cache.host_addresses() == {"198.18.255.1", "198.18.255.9", "2001:db8::9"}
    cache.replace(Kind.NODES, "", [])  # a re-list without it
    assert cache.host_addresses() == {"198.18.255.1"}
    cache.upsert_node(quiet)
    cache.delete_node("quiet")
    assert cache.host_addresses() == {"198.18.255.1"}
