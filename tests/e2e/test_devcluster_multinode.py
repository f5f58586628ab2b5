"""Routing that depends on where a client runs, on a real cluster of 3 nodes in 2 zones (marker `multinode`).

The cluster is a devcluster instance of its own (conftest: `multinode_cluster`, zone-a = nodes 1 and 3,
zone-b = node 2), so these tests never disturb the single-node one. One client pod is pinned to each node;
every answer names the echo pod that gave it, and the pod's node tells where the request went. Each rule is
asserted the way upstream's test/e2e/network/traffic_distribution.go does: from clients on known nodes.
"""

from __future__ import annotations

import collections
import functools
import re
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.conftest import (
    ECHO_IMAGE,
    Cluster,
    echo_deployment,
    run_echo_client,
    start_client_pod,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.multinode]

ZONE = "topology.kubernetes.io/zone"
REQUESTS = 30


@dataclass
class Topology:
    cluster: Cluster
    namespace: str
    zones: dict[str, str]  # node -> zone
    clients: dict[str, str]  # node -> client pod on it

    @property
    def nodes(self) -> list[str]:
        return sorted(self.zones)

    def nodes_in(self, zone: str) -> list[str]:
        return [n for n in self.nodes if self.zones[n] == zone]

    def pod_nodes(self, selector: str) -> dict[str, str]:
        """pod name -> node, for the pods matching `selector`."""
        pods = self.cluster.get("pods", "-n", self.namespace, "-l", selector)["items"]
        return {p["metadata"]["name"]: p["spec"].get("nodeName", "") for p in pods}

    def ask(self, node: str, ip: str, *, count: int = REQUESTS, timeout: float = 2.0) -> list[str]:
        """`count` requests, each on a new connection, from the client on `node` to ip:80."""
        return run_echo_client(
            self.cluster,
            self.namespace,
            self.clients[node],
            "--count",
            str(count),
            "--timeout",
            str(timeout),
            "--url",
            f"http://{ip}:80/",
            timeout=count * timeout + 60,
        )


@pytest.fixture(scope="module")
def topo(multinode_cluster: Cluster) -> Iterator[Topology]:
    cluster = multinode_cluster
    nodes = cluster.get("nodes")["items"]
    zones = {n["metadata"]["name"]: n["metadata"]["labels"].get(ZONE, "") for n in nodes}
    namespace = f"e2e-multinode-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", namespace)
    wait_for(
        lambda: cluster.kubectl("get", "sa", "default", "-n", namespace, check=False).returncode == 0,
        30,
        f"default ServiceAccount in {namespace}",
    )
    clients = {node: f"client-{i}" for i, node in enumerate(sorted(zones), start=1)}
    for node, pod in clients.items():
        start_client_pod(cluster, namespace, pod, timeout=90, node=node)
    yield Topology(cluster, namespace, zones, clients)
    cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _ready(cluster: Cluster, namespace: str, selector: str) -> list[str]:
    pods = cluster.get("pods", "-n", namespace, "-l", selector)["items"]
    return [
        p["metadata"]["name"]
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    ]


def _service(topo: Topology, name: str, selector: str, spec: str = "") -> str:
    """A Service on port 80 -> the echo's http port; returns its ClusterIP."""
    spec_lines = "".join(f"  {line}\n" for line in textwrap.dedent(spec).strip().splitlines())
    topo.cluster.apply(
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{{selector}}}\n"
        f"{spec_lines}  ports:\n  - {{name: http, port: 80, targetPort: http, protocol: TCP}}\n",
        topo.namespace,
    )
    return str(topo.cluster.get("service", name, "-n", topo.namespace)["spec"]["clusterIP"])


def _deploy(topo: Topology, name: str, replicas: int, *, group: str, pod_spec: str = "") -> None:
    topo.cluster.apply(
        echo_deployment(name, replicas=replicas, labels={"group": group}, pod_spec=pod_spec), topo.namespace
    )
    wait_for(
        lambda: len(_ready(topo.cluster, topo.namespace, f"app={name}")) == replicas, 120, f"{name} Ready"
    )


def _slice_endpoints(topo: Topology, service: str) -> list[dict[str, Any]]:
    slices = topo.cluster.get(
        "endpointslices", "-n", topo.namespace, "-l", f"kubernetes.io/service-name={service}"
    )["items"]
    return [ep for s in slices for ep in s.get("endpoints") or []]


def _answered_nodes(topo: Topology, answers: list[str], selector: str) -> collections.Counter[str]:
    where = topo.pod_nodes(selector)
    return collections.Counter(where.get(a, a) for a in answers)


def _wait_answering(topo: Topology, node: str, ip: str) -> None:
    # kube-proxy programs a new Service within its sync period: one good answer before measuring.
    wait_for(lambda: "ERROR" not in " ".join(topo.ask(node, ip, count=1)), 30, f"an answer on {node}")


def _only_from(topo: Topology, node: str, ip: str, selector: str) -> bool:
    """Do 10 new connections from the client on `node` all reach pods on `node`?"""
    return set(_answered_nodes(topo, topo.ask(node, ip, count=10), selector)) == {node}


SPREAD = """\
topologySpreadConstraints:
  - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule,
     labelSelector: {matchLabels: {app: NAME}}}
"""


def test_nodes_are_ready_in_their_zones_and_none_is_a_control_plane_node(topo: Topology) -> None:
    nodes = topo.cluster.get("nodes")["items"]
    assert len(nodes) == 3
    for n in nodes:
        conditions = {c["type"]: c["status"] for c in n["status"]["conditions"]}
        assert conditions["Ready"] == "True", n["metadata"]["name"]
        labels = n["metadata"]["labels"]
        assert not any("control-plane" in k for k in labels), labels  # topology rules would skip it
        assert int(n["status"]["allocatable"]["cpu"]) >= 1  # hints are weighted by allocatable CPU
        assert labels["topology.kubernetes.io/region"] == "devcluster"
    assert sorted(collections.Counter(topo.zones.values()).values()) == [1, 2]


def test_a_deployment_spreads_over_every_node_and_every_client_reaches_every_node(topo: Topology) -> None:
    _deploy(topo, "spread", 6, group="spread", pod_spec=SPREAD.replace("NAME", "spread"))
    assert set(topo.pod_nodes("app=spread").values()) == set(topo.nodes)
    ip = _service(topo, "spread", "app: spread")
    for node in topo.nodes:
        _wait_answering(topo, node, ip)
    for node in topo.nodes:
        answers = topo.ask(node, ip)
        assert not [a for a in answers if a.startswith("ERROR")], answers
        # Each of 3 nodes holds 2 of 6 pods: missing a node in 30 new connections has p = 3 * (2/3)^30 ~ 2e-5.
        assert set(_answered_nodes(topo, answers, "app=spread")) == set(topo.nodes), (node, answers)


def test_internal_traffic_policy_local_reaches_only_local_pods_and_drops_elsewhere(topo: Topology) -> None:
    local_node, *other_nodes = topo.nodes[1], topo.nodes[0], topo.nodes[2]
    _deploy(
        topo, "local", 2, group="local", pod_spec=f"nodeSelector: {{kubernetes.io/hostname: {local_node}}}"
    )
    # First as a Cluster-policy Service that every node answers: each node's kube-proxy has programmed the
    # ClusterIP, so a later timeout comes from the Local rule, not from a Service not yet synced.
    ip = _service(topo, "local", "app: local")
    for node in topo.nodes:
        _wait_answering(topo, node, ip)
    topo.cluster.kubectl(
        "patch",
        "service",
        "local",
        "-n",
        topo.namespace,
        "-p",
        '{"spec": {"internalTrafficPolicy": "Local"}}',
    )
    for node in other_nodes:
        wait_for(
            functools.partial(_no_answer, topo, node, ip),
            30,
            f"{node}, without a local endpoint, no longer answered",
        )
        # No local endpoint: kube-proxy drops the packets, so the client times out; a refusal would mean
        # a REJECT (what a Service without any endpoint gets).
        failures = _lines(topo.ask(node, ip, count=3, timeout=1.5))
        assert failures == ["ERROR timeout"] * 3, (node, failures)
    answers = topo.ask(local_node, ip, count=10)
    assert set(_answered_nodes(topo, answers, "app=local")) == {local_node}, answers
    assert len(set(answers)) == 2  # both local pods take new connections


def _no_answer(topo: Topology, node: str, ip: str) -> bool:
    return all(a.startswith("ERROR") for a in _lines(topo.ask(node, ip, count=2, timeout=1.5)))


def _lines(words: list[str]) -> list[str]:
    """run_echo_client splits on whitespace: put "ERROR kind" back together."""
    out: list[str] = []
    for word in words:
        if out and out[-1] == "ERROR":
            out[-1] = f"ERROR {word}"
        else:
            out.append(word)
    return out


def test_prefer_same_node_hints_and_routing(topo: Topology) -> None:
    _deploy(topo, "samenode", 3, group="samenode", pod_spec=SPREAD.replace("NAME", "samenode"))
    ip = _service(topo, "samenode", "app: samenode", "trafficDistribution: PreferSameNode")

    def hinted() -> bool:
        eps = _slice_endpoints(topo, "samenode")
        return len(eps) == 3 and all(
            ep.get("hints", {}).get("forNodes") == [{"name": ep["nodeName"]}] for ep in eps
        )

    wait_for(hinted, 30, "EndpointSlice hints.forNodes for PreferSameNode")
    for node in topo.nodes:
        # kube-proxy follows the hints within its sync period: poll until the first all-local round, then
        # ask again and require all-local for that second round too.
        wait_for(
            functools.partial(_only_from, topo, node, ip, "app=samenode"),
            30,
            f"only pods on {node} answer the client on {node}",
        )
        answers = topo.ask(node, ip, count=REQUESTS)
        assert set(_answered_nodes(topo, answers, "app=samenode")) == {node}, answers


def _in_zone(zone: str) -> str:
    term = f"{{matchExpressions: [{{key: {ZONE}, operator: In, values: [{zone}]}}]}}"
    return (
        "affinity:\n  nodeAffinity:\n    requiredDuringSchedulingIgnoredDuringExecution:\n"
        f"      nodeSelectorTerms: [{term}]\n"
    )


def test_prefer_same_zone_stays_in_the_zone_while_it_has_ready_pods_then_falls_back(topo: Topology) -> None:
    zone_a, zone_b = sorted(set(topo.zones.values()), key=lambda z: -len(topo.nodes_in(z)))
    a_nodes, b_nodes = topo.nodes_in(zone_a), topo.nodes_in(zone_b)
    spread_a = SPREAD.replace("NAME", "zone-a") + _in_zone(zone_a)
    _deploy(topo, "zone-a", len(a_nodes), group="zoned", pod_spec=spread_a)
    _deploy(topo, "zone-b", 1, group="zoned", pod_spec=_in_zone(zone_b))
    assert set(topo.pod_nodes("app=zone-a").values()) == set(a_nodes)  # one zone-A pod on each zone-A node
    ip = _service(topo, "zoned", "group: zoned", "trafficDistribution: PreferSameZone")

    def hinted() -> bool:
        eps = _slice_endpoints(topo, "zoned")
        return len(eps) == len(a_nodes) + 1 and all(
            ep.get("hints", {}).get("forZones") == [{"name": ep["zone"]}] for ep in eps
        )

    wait_for(hinted, 30, "EndpointSlice hints.forZones for PreferSameZone")
    client = a_nodes[0]

    def zones_answering() -> set[str]:
        return {topo.zones[n] for n in _answered_nodes(topo, topo.ask(client, ip, count=20), "group=zoned")}

    wait_for(lambda: zones_answering() == {zone_a}, 30, f"only {zone_a} answers a client in {zone_a}")
    # Zone A, not node: both zone-A nodes' pods take the zone-A client's connections.
    answers = topo.ask(client, ip, count=REQUESTS)
    assert set(_answered_nodes(topo, answers, "group=zoned")) == set(a_nodes), answers
    # A zone-B client stays in zone B.
    b_answers = topo.ask(b_nodes[0], ip, count=10)
    assert set(_answered_nodes(topo, b_answers, "group=zoned")) == {b_nodes[0]}, b_answers

    topo.cluster.kubectl("scale", "deployment/zone-a", "--replicas=0", "-n", topo.namespace)
    wait_for(lambda: zones_answering() == {zone_b}, 60, f"{zone_b} answers once {zone_a} has no pod")


TERMINATING_POD = """\
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {name}, group: lame}}}}
spec:
  terminationGracePeriodSeconds: 120
  enableServiceLinks: false
  containers:
    - name: echo
      image: {image}
      imagePullPolicy: Never
      ports: [{{name: http, containerPort: 8080, protocol: TCP}}]
      env:
        - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
      readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
      # Keeps serving while terminating: the preStop hook runs before the SIGTERM.
      lifecycle: {{preStop: {{exec: {{command: [sleep, "100"]}}}}}}
"""


def test_terminating_endpoints_serve_only_while_no_ready_one_exists(topo: Topology) -> None:
    ns = topo.namespace
    names = ["lame-1", "lame-2"]
    for name in names:
        topo.cluster.apply(TERMINATING_POD.format(name=name, image=ECHO_IMAGE), ns)
    wait_for(lambda: len(_ready(topo.cluster, ns, "group=lame")) == 2, 90, "two lame pods Ready")
    ip = _service(topo, "lame", "group: lame")
    client = topo.nodes[0]
    _wait_answering(topo, client, ip)
    try:
        topo.cluster.kubectl("delete", "pod", *names, "-n", ns, "--wait=false")

        def all_serving_terminating() -> bool:
            eps = _slice_endpoints(topo, "lame")
            return len(eps) == 2 and all(
                ep["conditions"] == {"ready": False, "serving": True, "terminating": True} for ep in eps
            )

        wait_for(all_serving_terminating, 30, "both endpoints serving and terminating")
        answers = topo.ask(client, ip, count=10)
        assert set(answers) <= set(names) and len(answers) == 10, answers  # no ready endpoint: fallback

        topo.cluster.apply(TERMINATING_POD.format(name="fresh", image=ECHO_IMAGE), ns)
        wait_for(lambda: "fresh" in _ready(topo.cluster, ns, "group=lame"), 90, "a ready pod")
        wait_for(
            lambda: set(topo.ask(client, ip, count=10)) == {"fresh"},
            30,
            "the ready pod takes every connection",
        )
    finally:
        topo.cluster.kubectl(
            "delete", "pod", *names, "fresh", "-n", ns, "--grace-period=0", "--force", check=False
        )


def test_exec_status_and_logs_reach_every_node(topo: Topology) -> None:
    from tests.e2e.conftest import MULTINODE_INSTANCE, devcluster

    status = devcluster("status", instance=MULTINODE_INSTANCE, check=False)
    assert status.returncode == 0, status.stdout
    for i, node in enumerate(topo.nodes, start=1):
        addr = devcluster(
            "exec", "--node", node, "--", "ip", "-4", "-br", "addr", instance=MULTINODE_INSTANCE
        )
        assert re.search(rf"dc-node\S*\s+UP\s+198\.18\.255\.{i}/25", addr.stdout), addr.stdout
        assert f"node {node}" in status.stdout
        log = devcluster("logs", "kubelet", "--node", node, "-n", "5", instance=MULTINODE_INSTANCE)
        assert log.stdout.strip(), f"no kubelet log for {node}"
    bad = devcluster("exec", "--node", "nope", "--", "true", instance=MULTINODE_INSTANCE, check=False)
    assert bad.returncode != 0 and "--node 'nope'" in bad.stderr
