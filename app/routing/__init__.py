"""Which endpoints kube-proxy may pick for a client, and why, as a pure function.

A ClusterIP Service is not balanced over "its pods" but over the endpoints that the kube-proxy of the
*client's* node considers usable. That set depends on the client's node and zone and on the Service:

1. ``internalTrafficPolicy: Local`` keeps only endpoints on the client's node; with none there while other
   nodes have some, traffic is dropped (the client sees a timeout), with none anywhere it is rejected.
2. Topology hints written by the EndpointSlice controller: node hints are used if every ready endpoint has
   one and one names the client's node; else zone hints likewise; else all endpoints. The controller writes
   them for ``trafficDistribution: PreferSameZone | PreferSameNode`` (``PreferClose`` is the old name of
   PreferSameZone) or for the ``service.kubernetes.io/topology-mode: Auto`` annotation, which wins over the
   field. kube-proxy itself only ever reads the hints.
3. Ready endpoints are used; only when none is usable are serving-but-terminating ones used.
4. ``sessionAffinity: ClientIP`` then pins each client address to one of the usable endpoints for the
   timeout, measured from the client's last new connection (each one refreshes it).

This follows kube-proxy's ``CategorizeEndpoints``/``topologyModeFromHints`` (pkg/proxy/topology.go) and the
EndpointSlice controller's hint rules (k8s.io/endpointslice trafficdist and topologycache). Nothing here
knows HTTP or the Kubernetes client: the web layer renders the words, the probe layer compares them with
what answered.
"""

from app.routing.expect import (
    Candidate,
    Client,
    Expectation,
    Fate,
    Policy,
    TopologyMode,
    candidates,
    expect,
    policy_of,
    topology_mode,
)
from app.routing.explain import RuleReport, explain, topology_annotation
from app.routing.judge import Routing, Verdict, judge, routing_of, zone_of

__all__ = [
    "Candidate",
    "Client",
    "Expectation",
    "Fate",
    "Policy",
    "Routing",
    "RuleReport",
    "TopologyMode",
    "Verdict",
    "candidates",
    "expect",
    "explain",
    "judge",
    "policy_of",
    "routing_of",
    "topology_annotation",
    "topology_mode",
    "zone_of",
]
