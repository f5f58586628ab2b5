"""API-shaped (camelCase dict) Services, EndpointSlices and Pods for unit tests."""

from __future__ import annotations

from typing import Any

from app.kube import convert
from app.kube.cache import Kind, ServiceCache


def svc(
    name: str,
    ns: str = "default",
    *,
    ip: str | None = "198.19.0.20",
    selector: dict[str, str] | None = None,
    ports: list[dict[str, Any]] | None = None,
    type: str = "ClusterIP",
    labels: dict[str, str] | None = None,
    rv: str = "1",
    created: str = "2026-01-01T00:00:00Z",
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": type,
        "ports": ports if ports is not None else [{"name": "http", "port": 80, "targetPort": 8080}],
        **spec,
    }
    if ip is not None:
        body["clusterIP"] = ip
        body["clusterIPs"] = [ip]
    if selector is not None:
        body["selector"] = selector
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": f"uid-{ns}-{name}",
            "resourceVersion": rv,
            "creationTimestamp": created,
            "labels": labels or {},
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": body,
    }


def endpoint(ip: str, pod: str | None = None, ns: str = "default", **conditions: bool) -> dict[str, Any]:
    ep: dict[str, Any] = {"addresses": [ip], "conditions": conditions, "nodeName": "node-1"}
    if pod is not None:
        ep["targetRef"] = {"kind": "Pod", "namespace": ns, "name": pod, "uid": f"uid-{pod}"}
    return ep


def eps(
    name: str,
    service: str | None,
    endpoints: list[dict[str, Any]],
    ns: str = "default",
    *,
    ports: list[dict[str, Any]] | None = None,
    rv: str = "1",
) -> dict[str, Any]:
    labels = {"endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}
    if service is not None:
        labels["kubernetes.io/service-name"] = service
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "resourceVersion": rv},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports if ports is not None else [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def pod(
    name: str,
    ns: str = "default",
    *,
    ip: str | None = "198.18.0.10",
    labels: dict[str, str] | None = None,
    ready: bool = True,
    ports: list[dict[str, Any]] | None = None,
    phase: str = "Running",
    restarts: int = 0,
    rv: str = "1",
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        "containerStatuses": [{"name": "app", "restartCount": restarts}],
    }
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": f"uid-{name}",
            "labels": labels or {},
            "resourceVersion": rv,
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {
            "nodeName": "node-1",
            "containers": [{"name": "app", "ports": ports or [{"name": "web", "containerPort": 8080}]}],
        },
        "status": status,
    }


def fill(
    cache: ServiceCache,
    services: list[dict[str, Any]] = (),  # type: ignore[assignment]
    slices: list[dict[str, Any]] = (),  # type: ignore[assignment]
    pods: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> ServiceCache:
    for s in services:
        cache.upsert_service(convert.service_from_api(s), convert.strip_for_display(s))
    for e in slices:
        cache.upsert_slice(convert.slice_from_api(e))
    for p in pods:
        cache.upsert_pod(convert.pod_from_api(p))
    return cache


def demo_cache() -> ServiceCache:
    """A small namespace 'shop': web (2 ready pods, named port, one pod lacks it), db (no pods), headless."""
    cache = ServiceCache()
    for kind in Kind:
        cache.mark_synced(kind, "")
    return fill(
        cache,
        services=[
            svc(
                "web",
                "shop",
                ip="198.19.0.30",
                selector={"app": "web"},
                labels={"tier": "front"},
                ports=[{"name": "http", "port": 80, "targetPort": "web"}],
                sessionAffinity="ClientIP",
                sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}},
            ),
            svc("db", "shop", ip="198.19.0.31", selector={"app": "db"}),
            svc("peers", "shop", ip="None", selector={"app": "web"}),
            svc("ext", "shop", ip=None, type="ExternalName", externalName="example.invalid", ports=[]),
        ],
        slices=[
            eps(
                "web-abc",
                "web",
                [
                    endpoint("198.18.0.11", "web-1", "shop"),
                    endpoint("198.18.0.12", "web-2", "shop", ready=True, serving=True, terminating=False),
                ],
                "shop",
                ports=[{"name": "http", "port": 8080}],
            ),
            eps(
                "web-def",
                "web",
                [endpoint("198.18.0.13", "web-3", "shop", ready=False)],
                "shop",
                ports=[{"name": "http", "port": 9090}],
            ),
        ],
        pods=[
            pod("web-1", "shop", ip="198.18.0.11", labels={"app": "web"}),
            pod("web-2", "shop", ip="198.18.0.12", labels={"app": "web"}),
            pod(
                "web-3",
                "shop",
                ip="198.18.0.13",
                labels={"app": "web"},
                ready=False,
                ports=[{"name": "web", "containerPort": 9090}],
            ),
            pod(
                "web-4",
                "shop",
                ip="198.18.0.14",
                labels={"app": "web"},
                ports=[{"name": "other", "containerPort": 1}],
            ),
        ],
    )


def node(
    name: str,
    zone: str | None = "zone-a",
    *,
    ready: bool = True,
    rv: str = "1",
    address: str = "198.18.255.1",
) -> dict[str, Any]:
    labels = {"kubernetes.io/hostname": name}
    if zone is not None:
        labels["topology.kubernetes.io/zone"] = zone
        labels["topology.kubernetes.io/region"] = "region-1"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "uid": f"uid-node-{name}", "resourceVersion": rv, "labels": labels},
        "status": {
            "addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": name}],
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "True" if ready else "False"},
            ],
        },
    }
