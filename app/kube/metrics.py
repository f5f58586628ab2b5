"""Prometheus metrics of the watch cache (on a registry the app owns, so tests can build many apps)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from app.kube.cache import ServiceCache
from app.kube.freshness import Aged


class WatchMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.restarts = Counter(
            "svcscope_watch_restarts",
            "Watch connections restarted, by resource and reason (gone, error, forbidden, timeout, closed)",
            ["resource", "reason"],
            registry=registry,
        )
        self.events = Counter(
            "svcscope_watch_events",
            "Watch events received, by resource and event type",
            ["resource", "type"],
            registry=registry,
        )
        self.lists = Counter(
            "svcscope_watch_lists",
            "Full lists (initial and re-lists), by resource",
            ["resource"],
            registry=registry,
        )


class CacheCollector(Collector):
    """Cache sizes and sync state, read at scrape time."""

    def __init__(self, cache: ServiceCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[GaugeMetricFamily]:
        sizes = GaugeMetricFamily("svcscope_cache_objects", "Objects in the watch cache", labels=["resource"])
        for kind, n in self.cache.sizes().items():
            sizes.add_metric([kind.value], n)
        yield sizes
        yield GaugeMetricFamily(
            "svcscope_cache_endpoints",
            "Endpoints in all cached EndpointSlices",
            value=self.cache.endpoint_total(),
        )
        yield GaugeMetricFamily(
            "svcscope_cache_synced", "1 once every first list synced", value=int(self.cache.synced)
        )
        yield GaugeMetricFamily(
            "svcscope_cache_version", "Mutations applied to the cache", value=self.cache.version
        )


class WatchAgeCollector(Collector):
    """Seconds since each watch was last known current (see ``app.kube.freshness``), read at scrape time."""

    def __init__(self, watchers: Sequence[Aged]) -> None:
        self.watchers = watchers

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ages = GaugeMetricFamily(
            "svcscope_watch_age_seconds",
            "Seconds since the watch was last known current (event, bookmark, list or apiserver check)",
            labels=["resource", "scope"],
        )
        stale = GaugeMetricFamily(
            "svcscope_watch_stale", "1 while the watch is shown as stale", labels=["resource", "scope"]
        )
        for watcher in self.watchers:
            age = watcher.age()
            if age.age_s is None:
                continue
            ages.add_metric([age.resource, age.scope or "*"], age.age_s)
            stale.add_metric([age.resource, age.scope or "*"], int(age.stale))
        yield ages
        yield stale
