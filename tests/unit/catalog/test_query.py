"""The Services list query: filters, search, sort orders and pagination over the watch cache."""

from __future__ import annotations

import datetime as dt

import pytest

from app.catalog.query import ServiceQuery, SortField, TypeFilter, run_query
from app.kube import convert
from app.kube.cache import ServiceCache
from tests.unit.kube.objects import demo_cache, svc


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
    result = run_query(_many(30), query)
    assert result.total == total
    assert (result.services[0].key.name if result.services else None) == first


def test_pagination_clamps_and_counts_pages():
    cache = _many(30)
    r = run_query(cache, ServiceQuery(page=2, page_size=20))
    assert (r.page, r.pages, len(r.services)) == (2, 2, 10)
    r = run_query(cache, ServiceQuery(page=99, page_size=20))
    assert r.page == 2
    r = run_query(cache, ServiceQuery(search="nothing-matches"))
    assert (r.total, r.page, r.pages) == (0, 1, 1)


def test_type_filter_headless_is_part_of_cluster_ip():
    cache = demo_cache()

    def names(q: ServiceQuery) -> list[str]:
        return [s.key.name for s in run_query(cache, q).services]

    assert names(ServiceQuery(types=frozenset({TypeFilter.CLUSTER_IP}))) == ["db", "web"]
    assert names(ServiceQuery(types=frozenset({TypeFilter.HEADLESS}))) == ["peers"]
    assert names(ServiceQuery(types=frozenset({TypeFilter.EXTERNAL_NAME}))) == ["ext"]
    assert names(ServiceQuery(sort=SortField.ENDPOINTS, descending=True))[0] == "web"
