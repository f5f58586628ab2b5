"""Expected versus observed for any set of answers from one client: a run's whole run, a watch's rolling
window. Reads the Service, its EndpointSlices and the client's Node from the view, and leaves the rules to
``app.routing``."""

from __future__ import annotations

from collections.abc import Mapping

from app import routing
from app.probe.targets import ClusterView, ProbeTarget


def routing_for(
    view: ClusterView,
    target: ProbeTarget,
    client_node: str | None,
    client_ip: str | None,
    hits: Mapping[str, int],
    errors: Mapping[str, int],
    *,
    endpoints_changed: bool = False,
    fresh_picks: int = 0,
) -> routing.Routing | None:
    """What kube-proxy on the client's node may pick for this port now, against ``hits``/``errors``;
    None when the client's node or the Service is not known."""
    if client_node is None:
        return None
    svc = view.service(target.service)
    if svc is None:
        return None
    port_name = target.port.name or ""
    endpoints = routing.candidates(svc, view.slices_for(target.service), port_name)
    node_of = getattr(view, "node", None)  # the watch cache knows Nodes (when allowed to)
    node = node_of(client_node) if node_of is not None else None
    zone = routing.zone_of(client_node, (node.zone or "") if node is not None else None, endpoints)
    client = routing.Client(client_node, zone, client_ip)
    return routing.routing_of(
        routing.expect(svc, endpoints, client),
        client,
        hits,
        errors,
        endpoints_changed=endpoints_changed,
        fresh_picks=fresh_picks,
    )
