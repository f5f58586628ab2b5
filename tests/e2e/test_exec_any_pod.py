"""Exec into any pod, the way users test a Service (``kubectl exec`` into their own pod and curl from there),
through the installed chart with its own RBAC: a busybox pod with only wget, a curl image, a python3-only
image, a shell without any client and a container without a shell. And a probe pod pinned to a node.

The images are written locally from this machine's binaries (tests/e2e/toolimages.py): nothing is pulled.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e import toolimages
from tests.e2e.conftest import Cluster, EchoApp, start_client_pod
from tests.e2e.dashboard import Dashboard, deployed, hits, probe_body
from tests.e2e.released import dashboard_pod, released_dashboard

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

COUNT = 40


@pytest.fixture
def exec_dashboard(cluster: Cluster, namespace: str) -> Iterator[tuple[Dashboard, dict[str, Any]]]:
    toolimages.build_and_import()
    sets = ("rbac.probePods=true", "rbac.exec=true", f"rbac.writableNamespaces={{{namespace}}}")
    with released_dashboard(cluster, namespace, *sets) as (release, dash):
        yield dash, dashboard_pod(cluster, release)


def exec_run(
    cluster: Cluster, dash: Dashboard, app: EchoApp, pod: str, count: int = COUNT, **extra: str
) -> dict[str, Any]:
    """An exec run from ``pod``, once the dashboard's cache has it Running (422 until then); finished."""

    def started() -> str | None:
        body = probe_body(app, count=count, concurrency=1, origin="exec", exec_pod=pod, timeout_s=2, **extra)
        r = dash.http.post("/api/v1/probes", json=body)
        assert r.status_code in (202, 422), r.text
        return str(r.json()["id"]) if r.status_code == 202 else None

    run_id = cluster.wait_for(started, 30, f"the dashboard to accept an exec run in {pod}")
    assert run_id is not None
    return dash.wait_run(run_id, timeout=300)


def test_exec_into_pods_with_whatever_client_they_have(
    cluster: Cluster,
    exec_dashboard: tuple[Dashboard, dict[str, Any]],
    deploy_echo: Callable[..., EchoApp],
    namespace: str,
) -> None:
    dash, own = exec_dashboard
    app = deployed(deploy_echo, dash, namespace)
    pods = {
        "wget": start_client_pod(cluster, namespace, "bb-wget", image=toolimages.WGET_IMAGE, command=None),
        "curl": start_client_pod(cluster, namespace, "curl", image=toolimages.CURL_IMAGE, command=None),
        "python3": start_client_pod(
            cluster, namespace, "py", image=toolimages.PYTHON_IMAGE, command='[sleep, "86400"]'
        ),
    }
    timings: dict[str, str] = {}
    for tool, pod in pods.items():
        started = time.monotonic()
        run = exec_run(cluster, dash, app, pod)
        took = time.monotonic() - started
        assert run["status"] == "done", (tool, run["error"])
        assert run["errors"] == {} and run["attributed"] == COUNT, (tool, run["errors"], run["unattributed"])
        assert len([p for p, n in hits(run).items() if n]) >= 2, (tool, hits(run))  # spread over the pods
        note = run["attribution"]["note"]
        assert f"sent with {tool}" in note, note
        assert run["client"]["pod"] == pod
        shapes = {
            "wget": f"wget -q -S -O - http://{app.cluster_ip}:",
            "curl": f"curl -sS -i --max-time 2 -H 'Connection: close' http://{app.cluster_ip}:",
            "python3": f"python3 -c 'socket: GET / from {app.cluster_ip}:",
        }
        assert shapes[tool] in note, note
        latency = run["latency_ms"]
        assert latency["p50"] is not None and 0 < latency["p50"] <= latency["p95"] < 2000, latency
        loop_s = run["elapsed_s"]  # from the loop's exec to its last line (the detection is before)
        timings[tool] = (
            f"{COUNT} requests: loop {loop_s:.2f} s = {COUNT / loop_s:.1f} req/s, {took:.1f} s wall with "
            f"detection and polling; latency p50 {latency['p50']:.1f} ms p95 {latency['p95']:.1f} ms"
        )
    print(f"\nexec timings: {timings}")

    # The page of a run says which tool sent and the command to reproduce it (escaped text, no markup).
    page = dash.http.get(f"/runs/{run['id']}").text
    assert "sent with python3" in page

    # Not only HTTP: TCP with busybox's nc (the echo backend's banner names its pod), UDP with python3.
    for pod, protocol, tool in ((pods["wget"], "TCP", "nc"), (pods["python3"], "UDP", "python3")):
        run = exec_run(cluster, dash, app, pod, count=20, port=protocol.lower(), protocol=protocol)
        assert run["status"] == "done" and run["attributed"] == 20, (protocol, run["error"], run["errors"])
        assert f"sent with {tool}" in run["attribution"]["note"], run["attribution"]["note"]
        assert len([p for p, n in hits(run).items() if n]) >= 2, (protocol, hits(run))

    # A shell without any client, and a container without a shell: the run fails with the words.
    shell_only = start_client_pod(
        cluster, namespace, "shell-only", image=toolimages.SHELL_ONLY_IMAGE, command=None
    )
    run = exec_run(cluster, dash, app, shell_only, count=3)
    assert run["status"] == "failed"
    assert (
        "no client for HTTP: looked for svcscope's echo client, curl, wget, python3, nc, bash" in run["error"]
    )
    no_shell = start_client_pod(cluster, namespace, "no-shell", image=toolimages.NO_SHELL_IMAGE, command=None)
    run = exec_run(cluster, dash, app, no_shell, count=3)
    assert run["status"] == "failed"
    assert "this container has no shell (sh)" in run["error"] and "use a probe pod" in run["error"], run[
        "error"
    ]

    # A pod outside the writable namespaces: refused before anything runs, with the reason.
    body = probe_body(app, count=3, concurrency=1, origin="exec", exec_namespace="kube-system", exec_pod="x")
    r = dash.http.post("/api/v1/probes", json=body)
    assert r.status_code == 403 and "cluster's own namespaces" in r.text, r.text
    r = dash.http.post("/api/v1/probes", json={**body, "exec_namespace": "not-writable-ns"})
    assert r.status_code == 403 and "is not writable" in r.text, r.text

    # The probe pod pinned to the dashboard's own node; an unknown node is refused at submit.
    node = own["spec"]["nodeName"]
    run = dash.probe(**probe_body(app, count=10, concurrency=1, origin="probe-pod", node=node), timeout=180)
    assert run["status"] == "done" and run["attributed"] == 10 and run["spec"]["node"] == node, run
    r = dash.http.post(
        "/api/v1/probes", json=probe_body(app, concurrency=1, origin="probe-pod", node="Bad_Node")
    )
    assert r.status_code == 422 and '"parameter":"node"' in r.text, r.text
    # The chart lets the dashboard watch Nodes: a name no node has is refused at submit, with the names.
    r = dash.http.post(
        "/api/v1/probes", json=probe_body(app, concurrency=1, origin="probe-pod", node="no-such-node")
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"node 'no-such-node' does not exist (nodes: {node})"), r.text
