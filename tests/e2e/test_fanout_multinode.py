"""Many clients at once, on the cluster of 3 nodes in 2 zones (marker `multinode`), through the installed
chart with its own RBAC (probe pods in its namespace, Nodes read-only), reached via `kubectl port-forward`.

"From every node" starts one probe pod pinned to each node; its matrix must match, row by row, the pods
kube-proxy on that node may pick: internalTrafficPolicy Local (drops on the nodes without a local pod),
trafficDistribution PreferSameNode and PreferSameZone, and the topology-mode Auto annotation. The expected
sets are worked out here from where the pods run, independently of the dashboard. Deleting the zone-A pods
mid-run must be explained as an endpoint change. "Many clients" on a ClientIP Service: every client sticks to
one pod. A browser starts a from-every-node run from the form and sees the matrix fill in live.

Every wait polls with a deadline; every run is bounded in requests and time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.conftest import echo_deployment, wait_for
from tests.e2e.dashboard import Dashboard
from tests.e2e.test_browser import browser_context, page  # noqa: F401 (fixtures)
from tests.e2e.test_devcluster_multinode import SPREAD, _ready, _service, _slice_endpoints
from tests.e2e.test_routing_verdict import ZONE, Setup, setup  # noqa: F401 (setup is a fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.multinode, pytest.mark.timeout(900)]

WIDE = 6  # 2 pods per node: zone-a (2 nodes) has 4 endpoints, zone-b 2 — the CPU ratio, so Auto hints
COUNT = 40  # per client: 4 expected pods each miss all 40 requests with p ≈ 4 x 0.75^40 ≈ 4e-5


@dataclass
class Pods:
    setup: Setup
    where: dict[str, str]  # pod -> node, of every backend below

    @property
    def topo(self) -> Any:
        return self.setup.topo

    def on(self, *nodes: str, app: str) -> set[str]:
        return {p for p, n in self.where.items() if n in nodes and p.startswith(f"{app}-")}


@pytest.fixture(scope="module")
def pods(setup: Setup) -> Pods:  # noqa: F811 (the imported fixture)
    """The backends, created together: `wide` (2 per node), `pinned` (2 on the first node), `za`/`zb` (the
    pods of zone a and zone b behind one Service, for the mid-run deletion)."""
    topo = setup.topo
    first = topo.nodes[0]
    zone_a, zone_b = topo.zones[first], topo.zones[topo.nodes[1]]
    assert zone_a != zone_b, topo.zones
    deployments = {
        "wide": echo_deployment("wide", replicas=WIDE, pod_spec=SPREAD.replace("NAME", "wide")),
        "pinned": echo_deployment(
            "pinned", replicas=2, pod_spec=f"nodeSelector: {{kubernetes.io/hostname: {first}}}"
        ),
        "za": echo_deployment(
            "za", replicas=2, labels={"group": "zt"}, pod_spec=f"nodeSelector: {{{ZONE}: {zone_a}}}"
        ),
        "zb": echo_deployment(
            "zb", replicas=2, labels={"group": "zt"}, pod_spec=f"nodeSelector: {{{ZONE}: {zone_b}}}"
        ),
    }
    for yaml_text in deployments.values():
        topo.cluster.apply(yaml_text, topo.namespace)
    want = {"wide": WIDE, "pinned": 2, "za": 2, "zb": 2}
    wait_for(
        lambda: all(len(_ready(topo.cluster, topo.namespace, f"app={a}")) == n for a, n in want.items()),
        180,
        "the backends Ready",
    )
    where: dict[str, str] = {}
    for app in want:
        where.update(topo.pod_nodes(f"app={app}"))
    assert sorted(n for p, n in where.items() if p.startswith("wide-")) == sorted(topo.nodes * 2), where
    return Pods(setup, where)


def start(dash: Dashboard, **body: Any) -> str:
    r = dash.http.post("/api/v1/fanouts", json={"port": "http", **body})
    assert r.status_code == 202, f"{r.status_code} {r.text}"
    fanout_id: str = r.json()["id"]
    return fanout_id


def result(dash: Dashboard, fanout_id: str) -> dict[str, Any]:
    r = dash.http.get(f"/api/v1/fanouts/{fanout_id}")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def finished(dash: Dashboard, fanout_id: str, timeout: float = 150.0) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def done() -> bool:
        nonlocal last
        last = result(dash, fanout_id)
        return bool(last["finished"])

    wait_for(done, timeout, f"fan-out {fanout_id} finished (last: {last.get('verdict')})", interval=0.5)
    return last


def until_as_expected(dash: Dashboard, timeout: float, **body: Any) -> dict[str, Any]:
    """Fan out again (each bounded) until every row is as expected: kube-proxy on each node follows new
    Services and hints on its own time."""
    deadline = time.monotonic() + timeout
    verdicts: list[list[str]] = []
    while True:
        data = finished(dash, start(dash, **body))
        verdicts.append(data["verdict"])
        if data["as_expected"] or time.monotonic() > deadline:
            break
    rows = {r["label"]: (r["state"], r["hits"], r["errors"], r["verdict"]) for r in data["rows"]}
    assert data["as_expected"] is True, (
        f"verdicts of {len(verdicts)} fan-out(s): {verdicts}; last rows {rows}"
    )
    print(f"{body['service']}: as expected after {len(verdicts)} fan-out(s)")
    return data


def check_rows(data: dict[str, Any], expected: dict[str, set[str]], *, every_pod: bool) -> None:
    """One row per node; each row's expected set is the one worked out here; every answer came from it
    (and with ``every_pod``, each expected pod answered: COUNT makes a miss negligible)."""
    rows = {r["node"]: r for r in data["rows"]}
    assert set(rows) == set(expected), rows
    for node, want in expected.items():
        row = rows[node]
        assert set(row["expected"]) == want, (node, row)
        assert row["as_expected"] is True and row["zone"], (node, row)
        if not want:
            assert row["fate"] == "dropped" and row["state"] == "dropped as expected", row
            assert row["hits"] == {} and row["errors"] == {"timeout": row["total"]}, row
            continue
        assert row["fate"] == "routed" and row["errors"] == {}, row
        assert set(row["hits"]) <= want and sum(row["hits"].values()) == row["total"], row
        if every_pod:
            assert set(row["hits"]) == want, row


def _hinted(
    pods: Pods, service: str, key: str, value: Callable[[dict[str, Any]], list[dict[str, str]]]
) -> None:
    def ok() -> bool:
        eps = _slice_endpoints(pods.topo, service)
        return len(eps) == WIDE and all(ep.get("hints", {}).get(key) == value(ep) for ep in eps)

    wait_for(ok, 60, f"EndpointSlice hints.{key} of {service}")


def test_local_policy_every_node_matrix_drops_where_no_local_pod(pods: Pods) -> None:
    topo, dash = pods.topo, pods.setup.dash
    began = time.monotonic()
    _service(topo, "loc", "app: pinned", "internalTrafficPolicy: Local")
    dash.wait_endpoints(topo.namespace, "loc", 2)
    first = topo.nodes[0]
    # A drop costs the client its timeout per request: few requests, a short timeout.
    data = until_as_expected(
        dash, 120, namespace=topo.namespace, service="loc", mode="nodes", count=6, timeout_s=0.5
    )
    expected = {n: (pods.on(first, app="pinned") if n == first else set()) for n in topo.nodes}
    check_rows(data, expected, every_pod=False)
    print(f"Local: matrix as expected in {time.monotonic() - began:.1f} s")


@pytest.mark.parametrize("rule", ["PreferSameNode", "PreferSameZone", "Auto"])
def test_topology_rules_every_node_matrix_matches_the_expected_sets(pods: Pods, rule: str) -> None:
    topo, dash = pods.topo, pods.setup.dash
    began = time.monotonic()
    name = f"wide-{rule.lower()}"
    if rule == "Auto":
        _service(topo, name, "app: wide")
        topo.cluster.kubectl(
            "annotate", "service", name, "-n", topo.namespace, "service.kubernetes.io/topology-mode=Auto"
        )
    else:
        _service(topo, name, "app: wide", f"trafficDistribution: {rule}")
    if rule == "PreferSameNode":
        _hinted(pods, name, "forNodes", lambda ep: [{"name": ep["nodeName"]}])
    else:
        # Auto: zone-a has 2/3 of the CPU and 4 of the 6 endpoints, zone-b 1/3 and 2, within the
        # controller's overload threshold, so each endpoint is hinted for its own zone (as PreferSameZone).
        _hinted(pods, name, "forZones", lambda ep: [{"name": topo.zones[ep["nodeName"]]}])
    dash.wait_endpoints(topo.namespace, name, WIDE)
    data = until_as_expected(dash, 120, namespace=topo.namespace, service=name, mode="nodes", count=COUNT)
    if rule == "PreferSameNode":
        expected = {n: pods.on(n, app="wide") for n in topo.nodes}
    else:
        expected = {
            n: pods.on(*(m for m in topo.nodes if topo.zones[m] == topo.zones[n]), app="wide")
            for n in topo.nodes
        }
    check_rows(data, expected, every_pod=True)
    mode = "node" if rule == "PreferSameNode" else "zone"
    for row in data["rows"]:
        assert any(line.startswith("as expected") for line in row["verdict"]), row
    print(f"{rule}: every {mode} matrix as expected in {time.monotonic() - began:.1f} s")


def test_deleting_the_zone_a_pods_mid_run_is_explained_as_an_endpoint_change(pods: Pods) -> None:
    topo, dash = pods.topo, pods.setup.dash
    began = time.monotonic()
    _service(topo, "zt", "group: zt", "trafficDistribution: PreferSameZone")
    dash.wait_endpoints(topo.namespace, "zt", 4)
    until_as_expected(dash, 120, namespace=topo.namespace, service="zt", mode="nodes", count=10)
    zone_a = topo.zones[topo.nodes[0]]
    a_nodes = {n for n in topo.nodes if topo.zones[n] == zone_a}
    # Enough requests (one at a time, each on a new connection) to be still sending a few seconds after
    # the first zone-a client starts, however fast this machine is; a loaded one only takes longer.
    fanout_id = start(dash, namespace=topo.namespace, service="zt", mode="nodes", count=600, timeout_s=0.5)
    sending: set[str] = set()

    def zone_a_sending() -> bool:
        rows = [r for r in result(dash, fanout_id)["rows"] if r["node"] in a_nodes]
        sending.update(r["node"] for r in rows if r["status"] == "running" and r["done"] > 0)
        return bool(sending)

    wait_for(zone_a_sending, 90, "a zone-a client sending")
    topo.cluster.kubectl("delete", "deployment", "za", "-n", topo.namespace, "--wait=false")
    data = finished(dash, fanout_id, timeout=300)
    assert data["as_expected"] is False, data
    za = pods.on(*a_nodes, app="za")
    for row in data["rows"]:
        # A zone-a client that had started before the deletion was answered by the zone-a pods first; a
        # client that starts later only meets the zone-b pods and is as expected.
        if row["node"] not in sending:
            continue
        assert set(row["hits"]) & za and row["state"] == "differs", row
        assert any(line.endswith("the endpoints changed during the run") for line in row["verdict"]), row
    assert any("the endpoints changed during the run" in line for line in data["verdict"]), data["verdict"]
    print(f"zone-a deletion explained in {time.monotonic() - began:.1f} s")


def test_many_clients_on_client_ip_each_stick_to_one_pod(pods: Pods) -> None:
    topo, dash = pods.topo, pods.setup.dash
    began = time.monotonic()
    _service(topo, "sticky", "app: wide", "sessionAffinity: ClientIP")
    dash.wait_endpoints(topo.namespace, "sticky", WIDE)
    # Each client's first connection picks one of the 6 pods at random; all 5 picking the same one has
    # probability 6 x (1/6)^5 ≈ 1/1300, so "at least 2 distinct pods" fails by chance about once in 1300 runs.
    data = until_as_expected(
        dash,
        120,
        namespace=topo.namespace,
        service="sticky",
        mode="clients",
        clients=5,
        count=10,
        timeout_s=2.0,
    )
    rows = data["rows"]
    assert len(rows) == 5 and data["client_ip_affinity"] is True
    assert all(r["pods_used"] == 1 and sum(r["hits"].values()) == 10 for r in rows), rows
    # Five clients, five source addresses: each known even when its 10-request pod had finished (and lost
    # its IP) before its status was read, since the client's records carry their own end's address.
    ips = [r["client_ip"] for r in rows]
    assert None not in ips and len(set(ips)) == 5, ips
    assert data["stuck_clients"] == 5 and data["distinct_pods"] >= 2, data
    assert data["verdict"][0].startswith("ClientIP: 5 of 5 clients stuck to exactly one pod"), data["verdict"]
    print(f"many clients: {data['distinct_pods']} distinct pods in {time.monotonic() - began:.1f} s")


LIVE_COUNT = 300  # per client: a few seconds of sending, so the matrix has partial states to show

# Marks the window (a reload would make a new one) and records every change of the rows' progress.
LIVE_JS = """
() => {
  window.__fanout_loaded = true;
  window.__fanout_seen = [];
  const record = () => {
    const m = document.querySelector('[data-testid=fanout-matrix]');
    if (!m) return;
    const cells = Array.from(m.querySelectorAll('td[data-hits]')).map(td => Number(td.dataset.hits));
    window.__fanout_seen.push([m.dataset.finished, cells.reduce((a, b) => a + b, 0)]);
  };
  record();
  new MutationObserver(record).observe(document.body, {subtree: true, childList: true});
}
"""


@pytest.mark.browser
def test_browser_starts_from_every_node_and_sees_the_matrix_fill_in_live(pods: Pods, page: Any) -> None:  # noqa: F811
    topo, dash = pods.topo, pods.setup.dash
    pg, console = page
    name = "wide-prefersamenode"  # made (and routed) by the PreferSameNode test, or made here
    if dash.http.get(f"/api/v1/services/{topo.namespace}/{name}").status_code != 200:
        _service(topo, name, "app: wide", "trafficDistribution: PreferSameNode")
        dash.wait_endpoints(topo.namespace, name, WIDE)
    base = str(dash.http.base_url).rstrip("/")
    pg.goto(f"{base}/services/{topo.namespace}/{name}")
    form = pg.locator("[data-testid=fanout-form]")
    form.locator("input[name=count]").fill(str(LIVE_COUNT))
    form.locator("[data-testid=fanout-nodes]").click()
    pg.wait_for_url("**/fanouts/*")
    pg.evaluate(LIVE_JS)
    assert pg.locator("[data-testid=fanout-table] tbody tr").count() == len(topo.nodes)
    pg.wait_for_selector("[data-testid=fanout-matrix][data-finished=true]", timeout=240_000)
    seen = pg.evaluate("window.__fanout_seen")
    assert pg.evaluate("window.__fanout_loaded") is True, "the page was reloaded"
    live = [total for fin, total in seen if fin == "false"]
    # Live: while the clients ran, the matrix showed at least two different partial totals in place (the
    # full total can show before the rows are marked finished: the pods are still being cleaned up).
    partial = {total for total in live if total < LIVE_COUNT * len(topo.nodes)}
    assert len(partial) >= 2 and max(live) <= LIVE_COUNT * len(topo.nodes), seen
    for node in topo.nodes:
        row = pg.locator(f"tr[data-node='{node}']")
        assert row.get_attribute("data-state") in ("as expected", "differs"), row.inner_text()
    assert not console.errors, console.errors
