"""The node origin (a hostNetwork probe pod: "ssh into a node and curl"), what the server saw (SNAT), and
the Service page's ping/TCP/DNS checks — through the installed chart with its own RBAC.

Measured on this cluster: a pod client reaches an echo pod with its own address; a hostNetwork client (the
node's address) reaches it from the CNI bridge's, because kube-proxy marks ClusterIP traffic from outside
the pod CIDR for masquerade. Pods here have no NET_RAW (all capabilities dropped, ping_group_range empty),
so the checks say "no NET_RAW" where they cannot ping.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, EchoApp
from tests.e2e.dashboard import Dashboard, deployed, probe_body
from tests.e2e.released import dashboard_pod, released_dashboard

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

COUNT = 10


@pytest.fixture
def node_dashboard(cluster: Cluster, namespace: str) -> Iterator[tuple[Dashboard, dict[str, Any]]]:
    with released_dashboard(cluster, namespace, "rbac.probePods=true", "rbac.nodeOrigin=true") as (rel, dash):
        yield dash, dashboard_pod(cluster, rel)


def seen_of(run: dict[str, Any], origin: str) -> dict[str, Any]:
    assert run["status"] == "done", (origin, run["error"])
    assert run["errors"] == {} and run["attributed"] == COUNT, (origin, run["errors"])
    seen = run["seen"]
    assert seen is not None and sum(p["replies"] for p in seen["peers"]) == COUNT, (origin, seen)
    return dict(seen)


def test_snat_for_the_node_origin_not_for_a_pod_and_the_checks(
    cluster: Cluster, node_dashboard: tuple[Dashboard, dict[str, Any]], deploy_echo: Any, namespace: str
) -> None:
    dash, own = node_dashboard
    node = own["spec"]["nodeName"]
    app: EchoApp = deployed(deploy_echo, dash, namespace)

    # -- what the server saw: a pod client as itself, the node's client from another address
    body = probe_body(app, count=COUNT, concurrency=1)
    pod_run = dash.probe(**body, origin="probe-pod", timeout=180)
    node_run = dash.probe(**body, origin="node", node=node, timeout=180)
    from_pod, from_node = seen_of(pod_run, "probe-pod"), seen_of(node_run, "node")
    assert from_pod["snat"] is False and [p["address"] for p in from_pod["peers"]] == [from_pod["client_ip"]]
    node_ip = own["status"]["hostIP"]
    assert from_node["client_ip"] == node_ip and node_run["client"]["node"] == node
    assert from_node["snat"] is True and node_ip not in {p["address"] for p in from_node["peers"]}
    assert "masquerades" in from_node["note"]
    print(f"\nserver saw: pod {from_pod['client_ip']} -> {from_pod['peers']}")
    print(f"server saw: node {node_ip} -> {from_node['peers']}")
    for run, flagged in ((pod_run, False), (node_run, True)):
        page = dash.http.get(f"/runs/{run['id']}").text
        assert ('data-testid="snat-flag"' in page) is flagged, run["id"]

    # -- the checks panel, through the Service page's form (CSRF) and from the node origin as JSON
    page = dash.http.get(f"/services/{namespace}/{app.name}").text
    assert 'id="checks-form"' in page and '<option value="node">' in page
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    names = [app.name, f"{app.name}.{namespace}", f"{app.name}.{namespace}.svc.cluster.local"]
    r = dash.http.post(
        f"/services/{namespace}/{app.name}/checks",
        data={"csrf_token": token.group(1), "origin": "dashboard", "port": "http"},
        headers={"HX-Request": "true"},
    )
    assert r.status_code == 200 and 'data-testid="checks-result"' in r.text, r.text
    ping = re.search(rf'data-kind="ping" data-target="{app.cluster_ip}" data-result="(\w+)"', r.text)
    assert ping is not None and ping.group(1) in ("no_answer", "no_net_raw"), r.text
    assert (
        f'data-kind="tcp" data-target="{app.cluster_ip}:80" data-result="connected" data-ok="true"' in r.text
    )
    for name in names:  # the dashboard runs in the Service's namespace: the bare name resolves too
        assert f'data-kind="dns" data-target="{name}" data-result="resolved" data-ok="true"' in r.text, name
    assert r.text.count(f"<code>{app.cluster_ip}</code>") >= 3

    checks = dash.http.post(
        f"/api/v1/services/{namespace}/{app.name}/checks", json={"origin": "node", "node": node}
    )
    assert checks.status_code == 200, checks.text
    by_target = {c["target"]: c for c in checks.json()["checks"]}
    assert by_target[app.cluster_ip]["result"] in ("no_answer", "no_net_raw")
    assert by_target[f"{app.cluster_ip}:80"]["ok"] is True
    for name in names[1:]:
        assert by_target[name]["addresses"] == [app.cluster_ip], by_target[name]

    # -- a headless Service over the same pods resolves to their IPs
    cluster.apply(
        f"""
        apiVersion: v1
        kind: Service
        metadata: {{name: {app.name}-headless}}
        spec:
          clusterIP: None
          selector: {{app: {app.name}}}
          ports: [{{name: http, port: 80, targetPort: 8080}}]
        """,
        namespace,
    )
    dash.wait_endpoints(namespace, f"{app.name}-headless", 3)
    pod_ips = sorted(p["status"]["podIP"] for p in cluster.ready_pods(namespace, app.selector))
    fqdn = f"{app.name}-headless.{namespace}.svc.cluster.local"

    def resolved() -> dict[str, Any] | None:
        r = dash.http.post(f"/api/v1/services/{namespace}/{app.name}-headless/checks", json={})
        assert r.status_code == 200, r.text
        found = {c["target"]: c for c in r.json()["checks"]}[fqdn]
        return found if found["ok"] else None  # CoreDNS follows the EndpointSlices on its own schedule

    headless = cluster.wait_for(resolved, 30, f"{fqdn} to resolve to the pod IPs")
    assert headless is not None and sorted(headless["addresses"]) == pod_ips
