from __future__ import annotations

import re

import pytest

from app.domain import (
    Endpoint,
    EndpointConditions,
    EndpointPort,
    EndpointSlice,
    ObjectKey,
    Protocol,
    ServicePort,
    ServiceType,
    TargetRef,
)
from app.probe.targets import (
    ForbiddenAddress,
    NotProbeable,
    ProbeProtocol,
    UnknownPort,
    UnknownService,
    backends,
    direct_target,
    forbidden_reason,
    resolve,
)
from tests.unit.fakes import NS, FakeView, make_pod, make_service, web_view

WEB = ObjectKey(NS, "web")
MULTI_PORTS = (
    ServicePort("http", 80, "http"),
    ServicePort("dns", 53, 5353, Protocol.UDP),
    ServicePort("dns-tcp", 53, 5353, Protocol.TCP),
    ServicePort(None, 9000, 9000),
)


def test_resolves_port_by_name_and_number() -> None:
    view = web_view(ports=MULTI_PORTS)
    assert resolve(view, WEB, "http", ProbeProtocol.HTTP).port.port == 80
    assert resolve(view, WEB, "80", ProbeProtocol.TCP).address == "198.19.0.50"
    # The same number for UDP and TCP: the protocol decides.
    assert resolve(view, WEB, "53", ProbeProtocol.UDP).port.name == "dns"
    assert resolve(view, WEB, 53, ProbeProtocol.HTTP).port.name == "dns-tcp"
    assert resolve(view, WEB, "9000", ProbeProtocol.TCP).port.name is None


@pytest.mark.parametrize(
    ("port", "protocol", "message"),
    [
        ("nope", ProbeProtocol.HTTP, "no port named 'nope'"),
        ("81", ProbeProtocol.HTTP, "no port 81"),
        ("dns", ProbeProtocol.HTTP, "is UDP, so it cannot be probed with HTTP (use UDP)"),
        ("http", ProbeProtocol.UDP, "is TCP, so it cannot be probed with UDP"),
        ("", ProbeProtocol.TCP, "port is empty"),
    ],
)
def test_unknown_or_mismatched_port(port: str, protocol: ProbeProtocol, message: str) -> None:
    view = web_view(ports=MULTI_PORTS)
    with pytest.raises(UnknownPort, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve(view, WEB, port, protocol)


def test_unknown_service_is_refused() -> None:
    with pytest.raises(UnknownService):
        resolve(web_view(), ObjectKey(NS, "nope"), "http", ProbeProtocol.HTTP)


def test_headless_and_external_name_are_explained() -> None:
    view = web_view(cluster_ip="None")
    with pytest.raises(NotProbeable, match="headless"):
        resolve(view, WEB, "http", ProbeProtocol.HTTP)
    view = web_view(type=ServiceType.EXTERNAL_NAME, cluster_ip="", external_name="example.com")
    with pytest.raises(NotProbeable, match="ExternalName"):
        resolve(view, WEB, "http", ProbeProtocol.HTTP)


def test_apiserver_is_refused_by_name_and_by_ip() -> None:
    view = web_view()
    with pytest.raises(ForbiddenAddress, match="apiserver"):
        resolve(view, ObjectKey("default", "kubernetes"), "https", ProbeProtocol.TCP)
    # A Service that (mis)uses the apiserver's IP or an endpoint of it.
    view.add_service(make_service("sneaky", cluster_ip="198.19.0.1"))
    with pytest.raises(ForbiddenAddress, match="apiserver"):
        resolve(view, ObjectKey(NS, "sneaky"), "http", ProbeProtocol.HTTP)


@pytest.mark.parametrize(
    ("ip", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("nonsense", "not an IP"),
    ],
)
def test_forbidden_addresses(ip: str, reason: str) -> None:
    found = forbidden_reason(ip)
    assert found is not None and reason in found


@pytest.mark.parametrize("ip", ["198.19.0.50", "198.18.0.10", "10.96.0.10", "fd00::10"])
def test_cluster_addresses_allowed(ip: str) -> None:
    assert forbidden_reason(ip) is None


@pytest.mark.parametrize("cluster_ip", ["127.0.0.1", "169.254.169.254"])
def test_service_with_forbidden_cluster_ip(cluster_ip: str) -> None:
    with pytest.raises(ForbiddenAddress):
        resolve(web_view(cluster_ip=cluster_ip), WEB, "http", ProbeProtocol.HTTP)


def test_backends_resolve_target_port_from_slice() -> None:
    view = web_view(3)
    target = resolve(view, WEB, "http", ProbeProtocol.HTTP)
    found = backends(view, target)
    assert [(b.pod, b.ip, b.port, b.ready) for b in found] == [
        ("web-0", "198.18.0.10", 8080, True),
        ("web-1", "198.18.0.11", 8080, True),
        ("web-2", "198.18.0.12", 8080, True),
    ]
    assert direct_target(view, target, "198.18.0.11") == ("198.18.0.11", 8080)


def test_direct_target_only_for_watched_pod_endpoints() -> None:
    view = web_view(2)
    target = resolve(view, WEB, "http", ProbeProtocol.HTTP)
    with pytest.raises(ForbiddenAddress, match="not a current endpoint"):
        direct_target(view, target, "198.18.0.99")
    with pytest.raises(ForbiddenAddress, match="apiserver"):
        direct_target(view, target, "198.18.255.1")
    with pytest.raises(ForbiddenAddress, match="metadata"):
        direct_target(view, target, "169.254.169.254")
    # Endpoints whose targetRef pod is not watched are never dialled directly.
    view.set_endpoints(WEB, [("ghost", "198.18.0.77")], [EndpointPort("http", 8080)], watched=False)
    with pytest.raises(ForbiddenAddress, match="not a watched Pod"):
        direct_target(view, target, "198.18.0.77")
    (ghost,) = backends(view, target)
    assert ghost.pod is None and not ghost.directly_probeable


@pytest.mark.parametrize(
    ("address", "reason"),
    [("198.18.255.1", "apiserver"), ("169.254.169.254", "metadata"), ("127.0.0.1", "loopback")],
)
def test_service_routed_to_refused_endpoint(address: str, reason: str) -> None:
    """A selector-less Service with a hand-made endpoint must not become a detour to a refused address."""
    view = web_view(1)
    view.set_endpoints(WEB, [("web-0", address)], [EndpointPort("http", 8080)], watched=False)
    with pytest.raises(ForbiddenAddress, match=reason):
        resolve(view, WEB, "http", ProbeProtocol.HTTP)


NODE = "198.18.254.1"  # a node's address as the pods report it (hostIP)
GATEWAY = "198.18.0.1"  # the pod network's gateway on that node


def node_view() -> FakeView:
    view = web_view(2)
    view.hosts.add(NODE)
    view.gateways.add(GATEWAY)
    return view


def hand_made(view: FakeView, address: str, port: int, *, ref: TargetRef | None = None) -> None:
    """A selector-less Service's EndpointSlice written by hand: one address, one port."""
    view.slices[WEB] = [
        EndpointSlice(
            key=ObjectKey(NS, "web-manual"),
            service_name="web",
            address_type="IPv4",
            endpoints=(Endpoint((address,), EndpointConditions(True, True, False), target_ref=ref),),
            ports=(EndpointPort("http", port),),
        )
    ]


@pytest.mark.parametrize(
    ("address", "port", "words"),
    [
        (NODE, 6443, f"its endpoint {NODE}:6443 — {NODE} is a node's address, not a pod of this Service"),
        (NODE, 10250, f"{NODE}:10250 is a node's kubelet"),
        ("198.18.254.254", 6443, "198.18.254.254 is in the nodes' own network (next to node 198.18.254.1)"),
        (GATEWAY, 8080, f"{GATEWAY} is a node's pod-network gateway"),
        ("198.18.0.77", 10250, "port 10250 is the kubelet's and 198.18.0.77 is not a pod of this Service"),
    ],
)
def test_nodes_gateways_and_the_kubelet_are_refused(address: str, port: int, words: str) -> None:
    view = node_view()
    hand_made(view, address, port)
    with pytest.raises(ForbiddenAddress, match=re.escape(words)):
        resolve(view, WEB, "http", ProbeProtocol.HTTP)


def test_a_host_network_pod_of_the_service_is_probed_but_never_its_kubelet_port() -> None:
    """A hostNetwork backend's endpoint is the node's address: allowed as that pod's own address only."""
    view = node_view()
    view.pods[ObjectKey(NS, "edge-0")] = make_pod("edge-0", NODE)
    hand_made(view, NODE, 8080, ref=TargetRef("Pod", NS, "edge-0"))
    target = resolve(view, WEB, "http", ProbeProtocol.HTTP)
    assert direct_target(view, target, NODE) == (NODE, 8080)
    hand_made(view, NODE, 10250, ref=TargetRef("Pod", NS, "edge-0"))
    with pytest.raises(ForbiddenAddress, match="kubelet"):
        resolve(view, WEB, "http", ProbeProtocol.HTTP)


def test_a_pod_of_another_namespace_is_not_the_services_pod() -> None:
    """The API does not check a targetRef: one naming a pod elsewhere is neither shown nor probed as ours."""
    view = node_view()
    view.pods[ObjectKey("kube-system", "coredns-0")] = make_pod("coredns-0", "198.18.0.2", "kube-system")
    hand_made(view, "198.18.0.2", 53, ref=TargetRef("Pod", "kube-system", "coredns-0"))
    target = resolve(view, WEB, "http", ProbeProtocol.HTTP)
    (b,) = backends(view, target)
    assert b.pod is None and not b.directly_probeable
    with pytest.raises(ForbiddenAddress, match="not a watched Pod"):
        direct_target(view, target, "198.18.0.2")
    # ... nor does it make a node address probe-able
    view.pods[ObjectKey("kube-system", "apiserver-0")] = make_pod("apiserver-0", NODE, "kube-system")
    hand_made(view, NODE, 6443, ref=TargetRef("Pod", "kube-system", "apiserver-0"))
    with pytest.raises(ForbiddenAddress, match="node's address"):
        resolve(view, WEB, "http", ProbeProtocol.HTTP)
