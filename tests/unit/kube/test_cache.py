from __future__ import annotations

import datetime as dt

import pytest

from app.domain import ObjectKey
from app.kube import convert
from app.kube.cache import Change, Kind, ServiceCache, ServiceQuery, SortField, TypeFilter
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


def _many(n: int) -> ServiceCache:
    cache = ServiceCache()
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for i in range(n):
        created = (base + dt.timedelta(minutes=i)).isoformat()
        raw = svc(
            f"svc-{i:04d}",
            f"ns-{i % 3}",
            ip=f"198.19.{i // 250}.{i % 250}",
            labels={"n": str(i)},
            created=created,
        )
        cache.upsert_service(convert.service_from_api(raw))
    return cache


@pytest.mark.parametrize(
    ("query", "total", "first"),
    [
        (ServiceQuery(), 30, "svc-0000"),
        (ServiceQuery(namespace="ns-1"), 10, "svc-0001"),
        (ServiceQuery(search="svc-001"), 10, "svc-0010"),
        (ServiceQuery(search="n=7"), 1, "svc-0007"),  # label search
        (ServiceQuery(search="198.19.0.29"), 1, "svc-0029"),  # IP search
        (ServiceQuery(search="ns-2 svc-002"), 4, "svc-0020"),  # all terms must match
        (ServiceQuery(sort=SortField.AGE), 30, "svc-0029"),  # newest first
        (ServiceQuery(sort=SortField.CLUSTER_IP, descending=True), 30, "svc-0029"),
        (ServiceQuery(sort=SortField.NAMESPACE), 30, "svc-0000"),
        (ServiceQuery(types=frozenset({TypeFilter.EXTERNAL_NAME})), 0, None),
    ],
)
def test_query(query, total, first):
    result = _many(30).query(query)
    assert result.total == total
    assert (result.services[0].key.name if result.services else None) == first


def test_pagination_clamps_and_counts_pages():
    cache = _many(30)
    r = cache.query(ServiceQuery(page=2, page_size=20))
    assert (r.page, r.pages, len(r.services)) == (2, 2, 10)
    r = cache.query(ServiceQuery(page=99, page_size=20))
    assert r.page == 2
    r = cache.query(ServiceQuery(search="nothing-matches"))
    assert (r.total, r.page, r.pages) == (0, 1, 1)


def test_type_filter_headless_is_part_of_cluster_ip():
    cache = demo_cache()

    def names(q: ServiceQuery) -> list[str]:
        return [s.key.name for s in cache.query(q).services]

    assert names(ServiceQuery(types=frozenset({TypeFilter.CLUSTER_IP}))) == ["db", "peers", "web"]
    assert names(ServiceQuery(types=frozenset({TypeFilter.HEADLESS}))) == ["peers"]
    assert names(ServiceQuery(types=frozenset({TypeFilter.EXTERNAL_NAME}))) == ["ext"]
    assert names(ServiceQuery(sort=SortField.ENDPOINTS, descending=True))[0] == "web"
