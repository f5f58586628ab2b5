"""A probe pod's node, checked against the watched Nodes before a run: refused only when the Nodes are
known and none has that name."""

from __future__ import annotations

from app.catalog.nodes import NAMES_SHOWN, unknown_node
from app.domain import Node
from app.kube.cache import ALL_NAMESPACES, NODES_FORBIDDEN, Kind, ServiceCache


def _cache(*names: str, synced: bool = True) -> ServiceCache:
    cache = ServiceCache()
    for name in names:
        cache.upsert_node(Node(name, "zone-a", None, (), ready=True))
    if synced:
        cache.mark_synced(Kind.NODES, ALL_NAMESPACES)
    return cache


def test_an_unknown_node_is_refused_with_the_names_that_exist() -> None:
    why = unknown_node(_cache("node-b", "node-a"), "node-c")
    assert why is not None
    assert why.startswith("node 'node-c' does not exist (nodes: node-a, node-b)"), why
    assert "would never start" in why


def test_a_known_node_passes() -> None:
    assert unknown_node(_cache("node-a", "node-b"), "node-b") is None


def test_nodes_not_listed_yet_or_not_watched_let_the_run_find_out() -> None:
    assert unknown_node(_cache("node-a", synced=False), "node-c") is None
    forbidden = _cache(synced=False)
    forbidden.set_problem(Kind.NODES, ALL_NAMESPACES, NODES_FORBIDDEN, forbidden=True)
    assert unknown_node(forbidden, "node-c") is None


def test_the_names_shown_are_bounded() -> None:
    names = [f"node-{i:03d}" for i in range(NAMES_SHOWN + 5)]
    why = unknown_node(_cache(*names), "elsewhere")
    assert why is not None
    assert f"node-{NAMES_SHOWN - 1:03d} and 5 more)" in why and f"node-{NAMES_SHOWN:03d}" not in why
