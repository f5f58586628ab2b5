"""Endpoint sets for the routing tests: zones a/b/c, nodes n1..n4, hinted as the controller does."""

from __future__ import annotations

import dataclasses

from app.routing import Candidate

__all__ = ["NODED", "SPREAD", "ZONED", "Candidate", "ep", "hinted"]


def ep(
    name: str,
    node: str,
    zone: str = "a",
    *,
    ready: bool = True,
    terminating: bool = False,
    serving: bool | None = None,
    zones: tuple[str, ...] = (),
    nodes: tuple[str, ...] = (),
) -> Candidate:
    return Candidate(
        address=f"198.18.{ord(name[-1]) % 250}.{len(name)}",
        pod=name,
        node=node,
        zone=zone,
        ready=ready,
        serving=ready if serving is None else serving,
        terminating=terminating,
        hints_zones=zones,
        hints_nodes=nodes,
    )


def hinted(name: str, node: str, zone: str, *, same_node: bool = False, **kw: bool) -> Candidate:
    """An endpoint as the EndpointSlice controller hints it for PreferSameZone / PreferSameNode."""
    return ep(name, node, zone, zones=(zone,), nodes=(node,) if same_node else (), **kw)


SPREAD = (ep("p1", "n1", "a"), ep("p2", "n2", "b"), ep("p3", "n3", "c"))
ZONED = (hinted("p1", "n1", "a"), hinted("p2", "n2", "b"), hinted("p3", "n3", "c"), hinted("p4", "n4", "a"))
NODED = tuple(dataclasses.replace(c, hints_nodes=(c.node or "",)) for c in ZONED)
