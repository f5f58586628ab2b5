"""Kubernetes API objects -> domain objects (pure).

Input is the API's JSON shape (camelCase dicts, as the watch stream and ``list`` return them) or a
``kubernetes_asyncio`` model object, which :func:`as_dict` turns into that shape first. Missing
fields are kept as ``None`` where the API gives an absent value a meaning (EndpointConditions).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from app.domain import (
    REGION_LABEL,
    ZONE_LABEL,
    ContainerPort,
    Endpoint,
    EndpointConditions,
    EndpointPort,
    EndpointSlice,
    Node,
    NodeAddress,
    ObjectKey,
    Pod,
    Protocol,
    Service,
    ServicePort,
    ServiceType,
    TargetRef,
)

Obj = Mapping[str, Any]
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"


def as_dict(obj: object) -> Any:
    """A model object (``attribute_map`` + attributes) or plain data -> JSON-shaped plain data."""
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    if isinstance(obj, dt.datetime):
        return obj.isoformat()
    if isinstance(obj, Mapping):
        return {str(k): as_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [as_dict(v) for v in obj]
    attribute_map = getattr(obj, "attribute_map", None)
    if isinstance(attribute_map, Mapping):
        out: dict[str, Any] = {}
        for attr, json_key in attribute_map.items():
            value = getattr(obj, attr, None)
            if value is not None:
                out[json_key] = as_dict(value)
        return out
    raise TypeError(f"cannot convert {type(obj).__name__} to API data")


def _dict(value: object) -> Obj:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _str_map(value: object) -> dict[str, str]:
    return {str(k): str(v) for k, v in _dict(value).items()}


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _opt_bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def parse_time(value: object) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _protocol(value: object) -> Protocol:
    try:
        return Protocol(str(value)) if value else Protocol.TCP
    except ValueError:
        return Protocol.TCP


def object_key(obj: Obj) -> ObjectKey:
    meta = _dict(obj.get("metadata"))
    return ObjectKey(str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _target_port(value: object, port: int) -> int | str:
    if value is None or value == "":
        return port  # the API defaults targetPort to port
    if isinstance(value, int):
        return value
    text = str(value)
    return int(text) if text.isdigit() else text


def service_from_api(obj: Obj) -> Service:
    meta = _dict(obj.get("metadata"))
    spec = _dict(obj.get("spec"))
    try:
        svc_type = ServiceType(str(spec.get("type") or "ClusterIP"))
    except ValueError:
        svc_type = ServiceType.CLUSTER_IP
    ports = tuple(
        ServicePort(
            name=_opt_str(p.get("name")) or None,
            port=int(p.get("port") or 0),
            target_port=_target_port(p.get("targetPort"), int(p.get("port") or 0)),
            protocol=_protocol(p.get("protocol")),
            app_protocol=_opt_str(p.get("appProtocol")),
            node_port=int(p["nodePort"]) if p.get("nodePort") else None,
        )
        for p in map(_dict, _list(spec.get("ports")))
    )
    selector_raw = spec.get("selector")
    affinity_cfg = _dict(_dict(spec.get("sessionAffinityConfig")).get("clientIP"))
    timeout = affinity_cfg.get("timeoutSeconds")
    affinity = str(spec.get("sessionAffinity") or "None")
    if affinity == "ClientIP" and timeout is None:
        timeout = 10800  # the API's documented default
    return Service(
        key=object_key(obj),
        uid=str(meta.get("uid") or ""),
        type=svc_type,
        cluster_ip=_opt_str(spec.get("clusterIP")),
        cluster_ips=tuple(str(ip) for ip in _list(spec.get("clusterIPs"))),
        ip_families=tuple(str(f) for f in _list(spec.get("ipFamilies"))),
        ip_family_policy=_opt_str(spec.get("ipFamilyPolicy")),
        ports=ports,
        selector=_str_map(selector_raw) if isinstance(selector_raw, Mapping) and selector_raw else None,
        session_affinity=affinity,
        affinity_timeout_s=int(timeout) if timeout is not None and affinity == "ClientIP" else None,
        internal_traffic_policy=_opt_str(spec.get("internalTrafficPolicy")),
        external_traffic_policy=_opt_str(spec.get("externalTrafficPolicy")),
        traffic_distribution=_opt_str(spec.get("trafficDistribution")),
        external_name=_opt_str(spec.get("externalName")),
        labels=_str_map(meta.get("labels")),
        annotations=_str_map(meta.get("annotations")),
        created=parse_time(meta.get("creationTimestamp")),
        resource_version=str(meta.get("resourceVersion") or ""),
        cluster_ip_set_by=_cluster_ip_set_by(meta, spec),
    )


def _cluster_ip_set_by(meta: Obj, spec: Obj) -> str | None:
    """The field manager that owns ``spec.clusterIP`` ("" when none does: the apiserver allocated it).

    An address a client writes into the object is owned by that client's field manager; one the
    apiserver allocates belongs to no manager. Unknown (None) without managedFields or an address.
    """
    managed = meta.get("managedFields")
    ip = spec.get("clusterIP")
    if not isinstance(managed, list) or not managed or not ip or ip == "None":
        return None
    for entry in managed:
        fields = _dict(_dict(entry).get("fieldsV1"))
        if "f:clusterIP" in _dict(fields.get("f:spec")):
            return str(_dict(entry).get("manager") or "a client")
    return ""


def _endpoint(ep: Obj) -> Endpoint:
    cond = _dict(ep.get("conditions"))
    hints = _dict(ep.get("hints"))
    ref = ep.get("targetRef")
    target_ref = None
    if isinstance(ref, Mapping) and ref.get("name"):
        target_ref = TargetRef(
            kind=str(ref.get("kind") or ""),
            namespace=_opt_str(ref.get("namespace")),
            name=str(ref["name"]),
            uid=_opt_str(ref.get("uid")),
        )
    return Endpoint(
        addresses=tuple(str(a) for a in _list(ep.get("addresses"))),
        conditions=EndpointConditions(
            ready=_opt_bool(cond.get("ready")),
            serving=_opt_bool(cond.get("serving")),
            terminating=_opt_bool(cond.get("terminating")),
        ),
        hostname=_opt_str(ep.get("hostname")),
        node_name=_opt_str(ep.get("nodeName")),
        zone=_opt_str(ep.get("zone")),
        target_ref=target_ref,
        hints_zones=_hint_names(hints.get("forZones")),
        hints_nodes=_hint_names(hints.get("forNodes")),
    )


def _hint_names(value: object) -> tuple[str, ...]:
    return tuple(str(h["name"]) for h in map(_dict, _list(value)) if h.get("name"))


def slice_from_api(obj: Obj) -> EndpointSlice:
    meta = _dict(obj.get("metadata"))
    labels = _str_map(meta.get("labels"))
    return EndpointSlice(
        key=object_key(obj),
        service_name=labels.get(SERVICE_NAME_LABEL),
        address_type=str(obj.get("addressType") or ""),
        endpoints=tuple(_endpoint(_dict(ep)) for ep in _list(obj.get("endpoints"))),
        ports=tuple(
            EndpointPort(
                name=_opt_str(p.get("name")),
                port=int(p["port"]) if p.get("port") is not None else None,
                protocol=_protocol(p.get("protocol")),
                app_protocol=_opt_str(p.get("appProtocol")),
            )
            for p in map(_dict, _list(obj.get("ports")))
        ),
        managed_by=labels.get(MANAGED_BY_LABEL),
        resource_version=str(meta.get("resourceVersion") or ""),
    )


def _condition_true(status: Obj, condition: str) -> bool:
    return any(
        c.get("type") == condition and c.get("status") == "True"
        for c in map(_dict, _list(status.get("conditions")))
    )


def pod_from_api(obj: Obj) -> Pod:
    meta = _dict(obj.get("metadata"))
    spec = _dict(obj.get("spec"))
    status = _dict(obj.get("status"))
    ready = _condition_true(status, "Ready")
    statuses = map(_dict, _list(status.get("containerStatuses")))
    restarts = sum(int(cs.get("restartCount") or 0) for cs in statuses)
    ports: list[ContainerPort] = []
    for container in map(_dict, _list(spec.get("containers"))):
        for p in map(_dict, _list(container.get("ports"))):
            if p.get("containerPort") is None:
                continue
            ports.append(
                ContainerPort(
                    container=str(container.get("name") or ""),
                    name=_opt_str(p.get("name")),
                    port=int(p["containerPort"]),
                    protocol=_protocol(p.get("protocol")),
                )
            )
    pod_ip = _opt_str(status.get("podIP")) or None
    pod_ips = tuple(str(_dict(p).get("ip")) for p in _list(status.get("podIPs")) if _dict(p).get("ip"))
    return Pod(
        key=object_key(obj),
        uid=str(meta.get("uid") or ""),
        labels=_str_map(meta.get("labels")),
        phase=str(status.get("phase") or "Unknown"),
        ready=ready,
        pod_ip=pod_ip,
        pod_ips=pod_ips or ((pod_ip,) if pod_ip else ()),
        node_name=_opt_str(spec.get("nodeName")),
        restarts=restarts,
        created=parse_time(meta.get("creationTimestamp")),
        deleting=meta.get("deletionTimestamp") is not None,
        container_ports=tuple(ports),
        resource_version=str(meta.get("resourceVersion") or ""),
        host_ip=_opt_str(status.get("hostIP")) or None,
        containers=tuple(str(c["name"]) for c in map(_dict, _list(spec.get("containers"))) if c.get("name")),
    )


def node_from_api(obj: Obj) -> Node:
    meta = _dict(obj.get("metadata"))
    status = _dict(obj.get("status"))
    labels = _str_map(meta.get("labels"))
    return Node(
        name=str(meta.get("name") or ""),
        zone=labels.get(ZONE_LABEL),
        region=labels.get(REGION_LABEL),
        addresses=tuple(
            NodeAddress(str(a.get("type") or ""), str(a["address"]))
            for a in map(_dict, _list(status.get("addresses")))
            if a.get("address")
        ),
        ready=_condition_true(status, "Ready"),
        labels=labels,
        resource_version=str(meta.get("resourceVersion") or ""),
        unschedulable=_dict(obj.get("spec")).get("unschedulable") is True,
    )


def strip_for_display(obj: Obj) -> dict[str, Any]:
    """The object as shown to a user: without ``metadata.managedFields`` (noise, and large)."""
    out = dict(obj)
    meta = dict(_dict(out.get("metadata")))
    meta.pop("managedFields", None)
    out["metadata"] = meta
    return out
