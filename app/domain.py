"""Domain objects shared by the kube cache, the probe engine and the web layer.

Frozen dataclasses only: they are built once from API objects (``app.kube.convert``) and
then passed around and rendered read-only, so HTML and JSON are produced from the same values.
No Kubernetes client, no web framework here.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, order=True, slots=True)
class ObjectKey:
    """Namespace + name of any namespaced object."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


ServiceKey = ObjectKey
PodKey = ObjectKey


# Kubernetes name rules, checked before any lookup. A DNS-1123 label (namespaces, Service and port names;
# at most 63 characters) has no dots; a DNS-1123 subdomain (pod names; at most 253) may have them.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
LABEL_MAX = 63
SUBDOMAIN_MAX = 253


class Origin(enum.StrEnum):
    """Where probe requests come from: the three ways of testing a Service from inside a cluster."""

    DASHBOARD = "dashboard"  # this process, i.e. the dashboard's own pod
    PROBE_POD = "probe-pod"  # a short-lived pod of the svcscope image; results read from its log
    EXEC = "exec"  # `kubectl exec` into an existing pod that has the svcscope echo client
    # A probe pod on the node's own network (hostNetwork): what "ssh into a node and curl" tests.
    NODE = "node"


# Origins that run in a fresh probe pod of the svcscope image (the node origin is one on the node's network).
PROBE_POD_ORIGINS = frozenset({Origin.PROBE_POD, Origin.NODE})


class ServiceType(enum.StrEnum):
    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"
    EXTERNAL_NAME = "ExternalName"


class Protocol(enum.StrEnum):
    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str | None
    port: int
    # An int, or the *name* of a container port that each pod resolves on its own.
    target_port: int | str
    protocol: Protocol = Protocol.TCP
    app_protocol: str | None = None
    node_port: int | None = None

    @property
    def label(self) -> str:
        """``name:port→targetPort/proto`` as shown in the list."""
        prefix = f"{self.name}:" if self.name else ""
        return f"{prefix}{self.port}→{self.target_port}/{self.protocol.value}"


@dataclass(frozen=True, slots=True)
class Service:
    key: ServiceKey
    uid: str
    type: ServiceType
    # ``None`` (headless) is represented by cluster_ip == "None" as in the API, see ``headless``.
    cluster_ip: str | None
    cluster_ips: tuple[str, ...]
    ip_families: tuple[str, ...]
    ip_family_policy: str | None
    ports: tuple[ServicePort, ...]
    # None means "no selector" (endpoints managed by hand); {} would select nothing special.
    selector: Mapping[str, str] | None
    session_affinity: str  # "None" | "ClientIP"
    affinity_timeout_s: int | None
    internal_traffic_policy: str | None
    external_traffic_policy: str | None
    traffic_distribution: str | None
    external_name: str | None
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    created: datetime | None
    resource_version: str
    # Who chose .spec.clusterIP, from managedFields: a field manager's name when a client set it, "" when
    # the apiserver allocated it, None when unknown (no managedFields sent, or no address at all).
    cluster_ip_set_by: str | None = None

    @property
    def headless(self) -> bool:
        return self.cluster_ip == "None"

    @property
    def has_virtual_ip(self) -> bool:
        """A ClusterIP that kube-proxy answers for (not headless, not ExternalName)."""
        return bool(self.cluster_ip) and not self.headless and self.type is not ServiceType.EXTERNAL_NAME


@dataclass(frozen=True, slots=True)
class TargetRef:
    kind: str
    namespace: str | None
    name: str
    uid: str | None = None


@dataclass(frozen=True, slots=True)
class EndpointConditions:
    """The three conditions exactly as the API sent them (``None`` = field absent)."""

    ready: bool | None
    serving: bool | None
    terminating: bool | None

    # How the discovery.k8s.io/v1 EndpointConditions API (v1.36) documents an absent value:
    # ready "A nil value should be interpreted as true", serving "A nil value should be interpreted
    # as true" (it no longer defers to ready), terminating "... as false".
    @property
    def effective_ready(self) -> bool:
        return True if self.ready is None else self.ready

    @property
    def effective_serving(self) -> bool:
        return True if self.serving is None else self.serving

    @property
    def effective_terminating(self) -> bool:
        return False if self.terminating is None else self.terminating


@dataclass(frozen=True, slots=True)
class Endpoint:
    addresses: tuple[str, ...]
    conditions: EndpointConditions
    hostname: str | None = None
    node_name: str | None = None
    zone: str | None = None
    target_ref: TargetRef | None = None
    # Topology hints the EndpointSlice controller wrote (hints.forZones / hints.forNodes): kube-proxy reads
    # these, never the Service's trafficDistribution field or topology annotation.
    hints_zones: tuple[str, ...] = ()
    hints_nodes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EndpointPort:
    name: str | None
    port: int | None
    protocol: Protocol = Protocol.TCP
    app_protocol: str | None = None


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    key: ObjectKey
    service_name: str | None  # label kubernetes.io/service-name
    address_type: str
    endpoints: tuple[Endpoint, ...]
    ports: tuple[EndpointPort, ...]
    managed_by: str | None = None
    resource_version: str = ""


@dataclass(frozen=True, slots=True)
class ContainerPort:
    container: str
    name: str | None
    port: int
    protocol: Protocol = Protocol.TCP


@dataclass(frozen=True, slots=True)
class Pod:
    key: PodKey
    uid: str
    labels: Mapping[str, str]
    phase: str
    ready: bool
    pod_ip: str | None
    pod_ips: tuple[str, ...]
    node_name: str | None
    restarts: int
    created: datetime | None
    deleting: bool
    container_ports: tuple[ContainerPort, ...] = field(default_factory=tuple)
    resource_version: str = ""
    host_ip: str | None = None  # the node's address (status.hostIP); equal to pod_ip for hostNetwork pods
    containers: tuple[str, ...] = ()  # container names, in spec order (what an exec may pick)

    def resolve_port(self, target: int | str, protocol: Protocol = Protocol.TCP) -> int | None:
        """The container port a Service targetPort means for this pod (None if the name is missing)."""
        if isinstance(target, int):
            return target
        for cp in self.container_ports:
            if cp.name == target and cp.protocol is protocol:
                return cp.port
        return None


ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"


@dataclass(frozen=True, slots=True)
class NodeAddress:
    type: str  # InternalIP, ExternalIP, Hostname, ...
    address: str


@dataclass(frozen=True, slots=True)
class Node:
    """A cluster node as far as routing needs it: where it is (zone, region) and whether it is Ready."""

    name: str
    zone: str | None  # label topology.kubernetes.io/zone (None: not labelled)
    region: str | None
    addresses: tuple[NodeAddress, ...]
    ready: bool
    labels: Mapping[str, str] = field(default_factory=dict)
    resource_version: str = ""
    unschedulable: bool = False  # spec.unschedulable (cordoned)
