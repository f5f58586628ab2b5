"""Nodes in the catalog: conversion, the cache's view of them, and their list-then-watch."""

from __future__ import annotations

import pytest

from app.domain import NodeAddress
from app.kube import convert
from app.kube.cache import ALL_NAMESPACES, NODES_FORBIDDEN, Kind, ServiceCache
from app.kube.watch import ApiError, ListResult, WatchConfig, Watcher
from tests.unit.kube.objects import node
from tests.unit.kube.test_watch import FakeSource, ev


@pytest.mark.parametrize(
    ("raw", "zone", "region", "ready"),
    [
        (node("n1", "zone-a"), "zone-a", "region-1", True),
        (node("n2", None), None, None, True),
        (node("n3", "zone-b", ready=False), "zone-b", "region-1", False),
        ({"metadata": {"name": "bare"}}, None, None, False),  # no labels, no status: not Ready
    ],
)
def test_node_from_api(raw, zone, region, ready) -> None:
    n = convert.node_from_api(raw)
    assert (n.zone, n.region, n.ready) == (zone, region, ready)
    assert n.name == raw["metadata"]["name"]


def test_node_addresses_are_kept_in_order() -> None:
    n = convert.node_from_api(node("n1", address="198.18.255.9"))
    assert n.addresses == (NodeAddress("InternalIP", "198.18.255.9"), NodeAddress("Hostname", "n1"))


def test_readiness_does_not_wait_for_nodes_but_zones_are_unknown_until_listed() -> None:
    cache = ServiceCache(["team-a"])
    for kind in (Kind.SERVICES, Kind.ENDPOINTSLICES, Kind.PODS):
        cache.mark_synced(kind, "team-a")
    assert cache.synced
    assert cache.nodes_unknown() == "node zones unknown: nodes not listed yet"
    cache.replace(
        Kind.NODES, ALL_NAMESPACES, [convert.node_from_api(node("n2")), convert.node_from_api(node("n1"))]
    )
    cache.mark_synced(Kind.NODES, ALL_NAMESPACES)
    assert cache.nodes_unknown() is None
    assert [n.name for n in cache.nodes()] == ["n1", "n2"]
    assert cache.sync_state()["nodes"] == {"*": True}
    assert cache.sizes()[Kind.NODES] == 2


def test_forbidden_nodes_are_said_on_the_service_page_not_as_a_banner() -> None:
    cache = ServiceCache()
    cache.set_problem(Kind.NODES, ALL_NAMESPACES, "Forbidden: ...", forbidden=True)
    assert cache.nodes_unknown() == NODES_FORBIDDEN == "node zones unknown: no permission to list nodes"
    assert cache.problems() == []
    # A watch that breaks (not a permission) is a problem like any other.
    cache.set_problem(Kind.NODES, ALL_NAMESPACES, "Watch of nodes interrupted")
    assert [p.message for p in cache.problems()] == ["Watch of nodes interrupted"]


async def test_nodes_are_listed_then_watched() -> None:
    source = FakeSource(
        [ListResult([node("n1", rv="5")], "100")],
        [
            [
                ev("ADDED", node("n2", "zone-b", rv="101")),
                ev("MODIFIED", node("n1", "zone-a", ready=False, rv="102")),
                ev("DELETED", node("n2", "zone-b", rv="103")),
            ]
        ],
    )
    cache = ServiceCache(["team-a"])
    seen: list[str] = []
    cache.subscribe(lambda c: seen.append(c.kind.value))
    w = Watcher(source, cache, Kind.NODES, ALL_NAMESPACES, config=WatchConfig())
    await w.step()
    assert source.calls[:2] == [("list", "", ""), ("watch", "", "100")]
    assert [(n.name, n.ready) for n in cache.nodes()] == [("n1", False)]
    assert cache.node("n2") is None
    assert w.resource_version == "103"
    assert set(seen) == {"nodes"}


async def test_forbidden_node_list_leaves_the_rest_working() -> None:
    source = FakeSource([ApiError(403, "Forbidden", 'nodes is forbidden: cannot list resource "nodes"')], [])
    cache = ServiceCache()
    slept: list[float] = []

    async def sleep(d: float) -> None:
        slept.append(d)

    w = Watcher(source, cache, Kind.NODES, ALL_NAMESPACES, sleep=sleep, rand=lambda: 1.0)
    await w.step()
    assert cache.nodes_unknown() == NODES_FORBIDDEN
    assert cache.problems() == [] and cache.nodes() == []
    assert slept == [WatchConfig().forbidden_retry_s]
