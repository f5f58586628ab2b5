"""Expected versus observed, from the dashboard's own node, on the cluster of 3 nodes in 2 zones (marker
`multinode`).

The chart is installed with its own ServiceAccount and RBAC (Nodes read-only, probe pods in its namespace)
and pinned to the second node; it is reached through `kubectl port-forward`. Its runs are judged against
what kube-proxy on its node may pick: with internalTrafficPolicy Local and no endpoint there, the verdict
is "dropped as expected"; with PreferSameNode only the pod on its node answers, "as expected". Every wait
is a poll with a deadline; every probe run is bounded in requests and time.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, wait_for
from tests.e2e.dashboard import Dashboard
from tests.e2e.released import dashboard_pod, released_dashboard
from tests.e2e.test_devcluster_multinode import SPREAD, Topology, _deploy, _service, _slice_endpoints

pytestmark = [pytest.mark.e2e, pytest.mark.multinode, pytest.mark.timeout(900)]

ZONE = "topology.kubernetes.io/zone"


@dataclass
class Setup:
    topo: Topology
    dash: Dashboard
    node: str  # where the dashboard runs


@pytest.fixture(scope="module")
def setup(multinode_cluster: Cluster) -> Iterator[Setup]:
    cluster = multinode_cluster
    zones = {
        n["metadata"]["name"]: n["metadata"]["labels"].get(ZONE, "") for n in cluster.get("nodes")["items"]
    }
    namespace = f"e2e-verdict-{uuid.uuid4().hex[:5]}"
    cluster.create_namespace(namespace)
    topo = Topology(cluster, namespace, zones, {})
    node = topo.nodes[1]
    sets = (
        f"nodeSelector.kubernetes\\.io/hostname={node}",
        "rbac.probePods=true",
    )
    started = time.monotonic()
    try:
        with released_dashboard(cluster, namespace, *sets) as (release, dash):
            pod = dashboard_pod(cluster, release)
            assert pod["spec"]["nodeName"] == node
            print(f"\ndashboard installed and forwarded in {time.monotonic() - started:.1f} s on {node}")
            yield Setup(topo, dash, node)
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def hits(run: dict[str, Any]) -> dict[str, int]:
    """The pods that answered (the report also lists current endpoints that got nothing)."""
    return {p["pod"]: p["hits"] for p in run.get("pods") or [] if p["hits"]}


def _body(service: str, namespace: str, **kw: Any) -> dict[str, Any]:
    return {"namespace": namespace, "service": service, "port": "http", "count": 10, "concurrency": 2, **kw}


def _until(
    what: str, timeout: float, probe: Callable[[], dict[str, Any]], ok: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Probe again (each run bounded) until ``ok``: kube-proxy follows Services and hints on its own time."""
    last: dict[str, Any] = {}

    def attempt() -> bool:
        nonlocal last
        last = probe()
        return ok(last)

    try:
        wait_for(attempt, timeout, what, interval=0.5)
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}; last run: {last.get('routing')} hits {hits(last)} errors {last.get('errors')}"
        ) from exc
    return last


def _set_policy(topo: Topology, service: str, policy: str) -> None:
    patch = json.dumps({"spec": {"internalTrafficPolicy": policy}})
    topo.cluster.kubectl("patch", "service", service, "-n", topo.namespace, "-p", patch)


def _policy(dash: Dashboard, namespace: str, name: str) -> str | None:
    r = dash.http.get(f"/api/v1/services/{namespace}/{name}")
    return r.json()["internal_traffic_policy"] if r.status_code == 200 else None


def test_local_policy_without_a_local_endpoint_is_dropped_as_expected(setup: Setup) -> None:
    topo, dash = setup.topo, setup.dash
    elsewhere = topo.nodes[0]
    assert elsewhere != setup.node
    started = time.monotonic()
    _deploy(
        topo, "local", 2, group="local", pod_spec=f"nodeSelector: {{kubernetes.io/hostname: {elsewhere}}}"
    )
    # First with the Cluster policy: answers prove kube-proxy on the dashboard's node programmed the
    # ClusterIP, so the timeouts later come from the Local rule, not from a Service not yet synced.
    _service(topo, "local", "app: local")
    dash.wait_endpoints(topo.namespace, "local", 2)
    body = _body("local", topo.namespace, timeout_s=1.0)
    cluster_run = _until(
        "answers under the Cluster policy", 60, lambda: dash.probe(**body), lambda r: not r["errors"]
    )
    routing = cluster_run["routing"]
    assert routing["client_node"] == setup.node and routing["fate"] == "routed"
    assert sorted(routing["expected"]) == sorted(topo.pod_nodes("app=local")), routing
    assert routing["as_expected"] is True, routing
    _set_policy(topo, "local", "Local")
    wait_for(
        lambda: _policy(dash, topo.namespace, "local") == "Local", 30, "the dashboard saw the Local policy"
    )
    run = _until(
        "a drop judged as expected",
        60,
        lambda: dash.probe(**_body("local", topo.namespace, timeout_s=1.0, count=4)),
        lambda r: bool(r["routing"]) and r["routing"]["as_expected"],
    )
    routing = run["routing"]
    assert routing["fate"] == "dropped" and routing["expected"] == []
    assert routing["verdict"] == [f"dropped as expected (no local endpoint on node {setup.node})"]
    assert run["errors"] == {"timeout": 4} and hits(run) == {}
    # The finished report does not change afterwards, whatever the Service does now.
    _set_policy(topo, "local", "Cluster")
    wait_for(
        lambda: _policy(dash, topo.namespace, "local") == "Cluster", 30, "the dashboard saw Cluster again"
    )
    assert dash.run(run["id"])["routing"] == routing
    page = dash.http.get(f"/runs/{run['id']}").text
    assert f"dropped as expected (no local endpoint on node {setup.node})" in page
    print(f"\nLocal policy: drop judged as expected after {time.monotonic() - started:.1f} s")


def test_prefer_same_node_answers_only_from_the_dashboards_node(setup: Setup) -> None:
    topo, dash = setup.topo, setup.dash
    started = time.monotonic()
    _deploy(topo, "near", 3, group="near", pod_spec=SPREAD.replace("NAME", "near"))
    where = topo.pod_nodes("app=near")
    assert sorted(where.values()) == topo.nodes
    (mine,) = [pod for pod, node in where.items() if node == setup.node]
    _service(topo, "near", "app: near", "trafficDistribution: PreferSameNode")

    def hinted() -> bool:
        eps = _slice_endpoints(topo, "near")
        return len(eps) == 3 and all(
            ep.get("hints", {}).get("forNodes") == [{"name": ep["nodeName"]}] for ep in eps
        )

    wait_for(hinted, 30, "EndpointSlice hints.forNodes for PreferSameNode")
    dash.wait_endpoints(topo.namespace, "near", 3)
    _until(
        "the dashboard's expectation to hold (kube-proxy follows the hints)",
        60,
        lambda: dash.probe(**_body("near", topo.namespace)),
        lambda r: bool(r["routing"]) and r["routing"]["as_expected"] and r["routing"]["expected"] == [mine],
    )
    run = dash.probe(**_body("near", topo.namespace, count=30, concurrency=3))
    routing = run["routing"]
    assert routing["client_node"] == setup.node and routing["client_zone"] == topo.zones[setup.node]
    assert routing["expected"] == [mine] and routing["as_expected"] is True, routing
    assert routing["verdict"][0].startswith("as expected"), routing
    assert hits(run) == {mine: 30}
    assert routing["reasons"][0] == f"node hints: only endpoints hinted for node {setup.node}"
    print(f"\nPreferSameNode: 30/30 on {mine}, as expected, after {time.monotonic() - started:.1f} s")

    # The Service page: the rule, and per node the one pod its kube-proxy picks; nodes known (RBAC).
    page = dash.http.get(f"/services/{topo.namespace}/near").text
    assert "Routing rule in effect" in page and "node zones unknown" not in page
    for pod, node in where.items():
        row = page[page.index(f'<tr data-node="{node}"') :]
        row = row[: row.index("</tr>")]
        assert 'data-fate="routed"' in row and f">{pod}<" in row, row

    # A probe pod is another client: its node is read once it is scheduled, and it is judged the same way.
    pod_started = time.monotonic()
    pod_run = _until(
        "a probe pod's run judged as expected",
        180,
        lambda: dash.probe(**_body("near", topo.namespace, origin="probe-pod", concurrency=1), timeout=120),
        lambda r: bool(r["routing"]) and r["routing"]["as_expected"],
    )
    routing = pod_run["routing"]
    assert routing["client_node"] in topo.nodes, pod_run
    expected = [p for p, n in where.items() if n == routing["client_node"]]
    assert routing["expected"] == expected and set(hits(pod_run)) == set(expected), (routing, hits(pod_run))
    print(f"probe pod on {routing['client_node']}: as expected after {time.monotonic() - pod_started:.1f} s")
