"""Without permission to read Nodes the product still works and says what it cannot know.

The chart is installed with ``rbac.readNodes=false`` and the app told to try anyway (SVCSCOPE_WATCH_NODES),
so its Node watch meets a real 403 from the apiserver: the Service page says "node zones unknown: no
permission to list nodes" (not a page-wide banner), the rule section still shows each endpoint's node, and
a probe run still gets its verdict (the dashboard's node comes from the Downward API, its zone from the
endpoints), and a probe pod pinned to a node that does not exist fails with the reason. Single-node
instance; through the chart's own ServiceAccount and a port-forward.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.e2e.conftest import Cluster, EchoApp, wait_for
from tests.e2e.dashboard import probe_body
from tests.e2e.released import dashboard_pod, released_dashboard

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def test_forbidden_nodes_leave_the_rule_and_the_verdict_working(
    cluster: Cluster, namespace: str, deploy_echo: Callable[..., EchoApp]
) -> None:
    started = time.monotonic()
    app = deploy_echo(namespace, "echo", replicas=2)
    env = {"SVCSCOPE_WATCH_NODES": "true"}  # after the chart's "false": the later entry wins
    sets = ("rbac.readNodes=false", "rbac.probePods=true")
    with released_dashboard(cluster, namespace, *sets, env=env) as (release, dash):
        node = dashboard_pod(cluster, release)["spec"]["nodeName"]
        forbidden = cluster.kubectl(
            "auth", "can-i", "list", "nodes", f"--as=system:serviceaccount:{namespace}:{release.fullname}",
            check=False,
        )  # fmt: skip
        assert forbidden.stdout.strip() == "no"
        dash.wait_endpoints(namespace, "echo", 2)

        def says_unknown() -> bool:
            return (
                "node zones unknown: no permission to list nodes"
                in dash.http.get(f"/services/{namespace}/echo").text
            )

        wait_for(says_unknown, 60, "the page to say node zones are unknown")
        page = dash.http.get(f"/services/{namespace}/echo").text
        assert "Routing rule in effect" in page and f'<tr data-node="{node}" data-fate="routed">' in page
        assert "Forbidden" not in page  # no page-wide banner for it
        run = dash.probe(**probe_body(app, count=10, concurrency=2))
        routing = run["routing"]
        assert routing["client_node"] == node and routing["as_expected"] is True, routing
        assert sorted(routing["expected"]) == sorted(
            p["metadata"]["name"] for p in cluster.pods(namespace, app.selector)
        )
        # Nodes unknown: a probe pod pinned to a name no node has is not refused at submit, the run finds
        # out from the pod's silence, says so while it waits, and fails with the words soon after.
        body = probe_body(app, count=3, concurrency=1, origin="probe-pod", node="no-such-node")
        pinned = time.monotonic()
        run = dash.probe(**body, timeout=90)
        took = time.monotonic() - pinned
        assert run["status"] == "failed" and run["error"].startswith(
            "node 'no-such-node' did not pick up probe pod "
        ), run["error"]
        assert "no running node has that name" in run["error"] and "kubectl get nodes" in run["error"]
        print(f"unknown node without Nodes watched: failed in {took:.1f} s")
    print(f"\nnodes forbidden: page and verdict checked in {time.monotonic() - started:.1f} s")
