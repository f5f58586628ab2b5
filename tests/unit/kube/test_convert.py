from __future__ import annotations

import pytest
from kubernetes_asyncio.client import models as m

from app.domain import EndpointConditions, Protocol, ServiceType
from app.kube import convert
from tests.unit.kube.objects import endpoint, eps, pod, svc

# EndpointConditions as the discovery.k8s.io/v1 API documents an absent (nil) value:
# ready nil -> true, serving nil -> true, terminating nil -> false.
CONDITIONS = [
    ({}, (None, None, None), (True, True, False)),
    ({"ready": False}, (False, None, None), (False, True, False)),
    ({"ready": True, "serving": False}, (True, False, None), (True, False, False)),
    ({"ready": False, "serving": True, "terminating": True}, (False, True, True), (False, True, True)),
    ({"terminating": True}, (None, None, True), (True, True, True)),
]


@pytest.mark.parametrize(("raw", "kept", "effective"), CONDITIONS)
def test_endpoint_conditions_keep_absent_values_and_read_them_as_documented(raw, kept, effective):
    es = convert.slice_from_api(eps("s", "web", [endpoint("198.18.0.1", "p", **raw)]))
    c = es.endpoints[0].conditions
    assert (c.ready, c.serving, c.terminating) == kept
    assert (c.effective_ready, c.effective_serving, c.effective_terminating) == effective


def test_conditions_missing_entirely():
    es = convert.slice_from_api(eps("s", "web", [{"addresses": ["198.18.0.1"]}]))
    assert es.endpoints[0].conditions == EndpointConditions(None, None, None)
    assert es.endpoints[0].target_ref is None


def test_service_fields():
    s = convert.service_from_api(
        svc(
            "web",
            selector={"app": "web"},
            ports=[
                {"name": "http", "port": 80, "targetPort": "web"},
                {"port": 53, "targetPort": 5353, "protocol": "UDP"},
                {"port": 81},
            ],
            sessionAffinity="ClientIP",
            internalTrafficPolicy="Cluster",
            trafficDistribution="PreferClose",
            ipFamilies=["IPv4"],
            ipFamilyPolicy="SingleStack",
        )
    )
    assert s.type is ServiceType.CLUSTER_IP and not s.headless and s.has_virtual_ip
    assert [p.label for p in s.ports] == ["http:80→web/TCP", "53→5353/UDP", "81→81/TCP"]
    assert s.ports[1].protocol is Protocol.UDP
    assert s.selector == {"app": "web"}
    assert s.affinity_timeout_s == 10800  # the API default when ClientIP has no timeout
    assert (s.internal_traffic_policy, s.traffic_distribution) == ("Cluster", "PreferClose")
    assert s.created is not None and s.created.year == 2026


def test_headless_external_name_and_no_selector():
    headless = convert.service_from_api(svc("h", ip="None", selector={"a": "b"}))
    assert headless.headless and not headless.has_virtual_ip
    ext = convert.service_from_api(svc("e", ip=None, type="ExternalName", externalName="x.invalid", ports=[]))
    assert (
        ext.type is ServiceType.EXTERNAL_NAME and ext.external_name == "x.invalid" and not ext.has_virtual_ip
    )
    manual = convert.service_from_api(svc("m"))
    assert manual.selector is None


def test_pod_fields_and_named_ports():
    p = convert.pod_from_api(
        pod("web-1", labels={"app": "web"}, ports=[{"name": "web", "containerPort": 8080}], restarts=3)
    )
    assert p.ready and p.phase == "Running" and p.restarts == 3 and p.pod_ip == "198.18.0.10"
    assert p.resolve_port("web") == 8080
    assert p.resolve_port("nope") is None
    assert p.resolve_port(9000) == 9000
    assert p.resolve_port("web", Protocol.UDP) is None
    assert p.host_ip is None
    raw = pod("web-2")
    raw["status"]["hostIP"] = "198.18.255.1"
    assert convert.pod_from_api(raw).host_ip == "198.18.255.1"


def test_model_objects_are_accepted_via_as_dict():
    obj = m.V1Service(
        metadata=m.V1ObjectMeta(name="web", namespace="ns", resource_version="7"),
        spec=m.V1ServiceSpec(
            cluster_ip="198.19.0.5",
            selector={"app": "web"},
            ports=[m.V1ServicePort(name="http", port=80, target_port="web")],
        ),
    )
    s = convert.service_from_api(convert.as_dict(obj))
    assert str(s.key) == "ns/web" and s.cluster_ip == "198.19.0.5" and s.ports[0].target_port == "web"
    assert s.resource_version == "7"
    slice_obj = m.V1EndpointSlice(
        address_type="IPv4",
        metadata=m.V1ObjectMeta(name="web-x", namespace="ns", labels={"kubernetes.io/service-name": "web"}),
        endpoints=[m.V1Endpoint(addresses=["198.18.0.1"], conditions=m.V1EndpointConditions(ready=False))],
    )
    es = convert.slice_from_api(convert.as_dict(slice_obj))
    assert es.service_name == "web"
    assert es.endpoints[0].conditions == EndpointConditions(False, None, None)


def test_strip_for_display_drops_managed_fields():
    raw = svc("web")
    shown = convert.strip_for_display(raw)
    assert "managedFields" not in shown["metadata"] and "managedFields" in raw["metadata"]


@pytest.mark.parametrize(
    ("managed", "ip", "expected"),
    [
        (
            [{"manager": "helm", "fieldsV1": {"f:spec": {"f:clusterIP": {}, "f:ports": {}}}}],
            "198.19.200.200",
            "helm",
        ),
        (
            [{"manager": "kubectl-client-side-apply", "fieldsV1": {"f:spec": {"f:ports": {}}}}],
            "198.19.0.7",
            "",
        ),
        (None, "198.19.0.7", None),  # no managedFields sent: unknown
        ([{"manager": "helm", "fieldsV1": {"f:spec": {"f:clusterIP": {}}}}], "None", None),  # headless
    ],
)
def test_who_chose_the_cluster_ip(managed: object, ip: str, expected: str | None) -> None:
    raw = svc("web", ip=ip)
    raw["metadata"]["managedFields"] = managed
    if managed is None:
        del raw["metadata"]["managedFields"]
    assert convert.service_from_api(raw).cluster_ip_set_by == expected


def test_topology_hints_are_kept_as_names():
    ep = endpoint("198.18.0.1", "p")
    ep["zone"] = "zone-a"
    ep["hints"] = {"forZones": [{"name": "zone-a"}], "forNodes": [{"name": "node-1"}, {}]}
    converted = convert.slice_from_api(eps("s", "web", [ep, endpoint("198.18.0.2", "q")])).endpoints
    assert (converted[0].zone, converted[0].hints_zones, converted[0].hints_nodes) == (
        "zone-a",
        ("zone-a",),
        ("node-1",),
    )
    assert (converted[1].hints_zones, converted[1].hints_nodes) == ((), ())
