"""The routing rules of a Service in plain words, for its page."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.domain import Service
from app.routing.expect import (
    SAME_NODE_DISTRIBUTION,
    SAME_ZONE_DISTRIBUTIONS,
    TOPOLOGY_HINTS_ANNOTATION,
    TOPOLOGY_MODE_ANNOTATION,
    Candidate,
    Policy,
    policy_of,
)


def topology_annotation(service: Service) -> str | None:
    value = service.annotations.get(TOPOLOGY_MODE_ANNOTATION)
    if value is None:
        value = service.annotations.get(TOPOLOGY_HINTS_ANNOTATION)
    return value


@dataclass(frozen=True, slots=True)
class RuleReport:
    """What decides the pod, in words: the declared settings and what kube-proxy will make of them."""

    internal_traffic_policy: Policy
    traffic_distribution: str | None
    topology_annotation: str | None
    governing: str  # which declaration the hint controller follows
    lines: tuple[str, ...]


def explain(service: Service, endpoints: Sequence[Candidate], zones: Sequence[str] = ()) -> RuleReport:
    """The routing rules of a Service in plain words. ``zones``: the cluster's zones, when nodes are known."""
    policy = policy_of(service)
    annotation = topology_annotation(service)
    distribution = service.traffic_distribution
    lines: list[str] = []
    auto = annotation is not None and annotation.lower() == "auto"
    if auto:
        governing = "topology-mode Auto (the annotation wins over trafficDistribution)"
        if distribution:
            lines.append(
                f"trafficDistribution {distribution} is ignored: the topology-mode annotation is set"
            )
    elif distribution in SAME_ZONE_DISTRIBUTIONS or distribution == SAME_NODE_DISTRIBUTION:
        governing = f"trafficDistribution {distribution}"
        if distribution == "PreferClose":
            lines.append("PreferClose is the deprecated name of PreferSameZone")
    else:
        governing = "none: every ready endpoint, cluster-wide"
    if policy is Policy.LOCAL:
        lines.append(
            "internalTrafficPolicy Local: a client reaches only endpoints on its own node; on a node"
            " without one its connections are dropped (they time out)"
        )
        if auto or distribution:
            lines.append("with Local policy kube-proxy ignores topology hints for cluster-internal traffic")

    ready = [c for c in endpoints if c.ready]
    wants_hints = auto or distribution in SAME_ZONE_DISTRIBUTIONS or distribution == SAME_NODE_DISTRIBUTION
    if not ready:
        if any(c.serving_terminating for c in endpoints):
            lines.append("no ready endpoints: the serving-terminating ones are used")
        else:
            lines.append("no ready or serving endpoints: connections are refused")
    elif wants_hints:
        lines.extend(_hint_lines(ready, auto, distribution, zones))
    elif any(c.hints_zones or c.hints_nodes for c in ready):
        lines.append("endpoints still carry hints from an earlier setting: the controller will remove them")
    return RuleReport(policy, distribution, annotation, governing, tuple(lines))


def _hint_lines(
    ready: Sequence[Candidate], auto: bool, distribution: str | None, zones: Sequence[str]
) -> list[str]:
    lines: list[str] = []
    no_zone_hint = [c.name for c in ready if not c.hints_zones]
    if distribution == SAME_NODE_DISTRIBUTION and not auto:
        no_node_hint = [c.name for c in ready if not c.hints_nodes]
        if no_node_hint:
            lines.append(f"node hints ignored: endpoint {no_node_hint[0]} has none")
        else:
            lines.append("node hints on every ready endpoint: a client prefers endpoints on its own node")
    if not no_zone_hint:
        lines.append("zone hints on every ready endpoint: a client prefers endpoints in its own zone")
        return lines
    if len(no_zone_hint) < len(ready):
        lines.append(f"zone hints ignored: endpoint {no_zone_hint[0]} has none")
        return lines
    # No endpoint has a zone hint: say why the controller wrote none, as far as we can tell.
    without_zone = [c.name for c in ready if not c.zone]
    if without_zone:
        lines.append(f"topology hints not populated: endpoint {without_zone[0]} has no zone")
    elif auto and zones and len(ready) < len(set(zones)):
        lines.append(
            f"topology hints not populated: fewer endpoints ({len(ready)}) than zones ({len(set(zones))})"
        )
    elif auto:
        lines.append(
            "topology hints not populated: the controller found the endpoints too unevenly spread over the"
            " zones' CPU, or nodes lack zone labels or allocatable CPU (see the Service's events)"
        )
    else:
        lines.append("topology hints not populated yet: the EndpointSlice controller has not written them")
    return lines
