"""Faults on the real devcluster, seen from the installed chart: what the user sees while the apiserver,
etcd, kube-proxy or CoreDNS fail, and that it catches up afterwards.

Selected on their own (``pytest -m faults``; ``make faults``): they stop parts of the shared node, which
breaks other e2e runs in progress. Faults go through ``python -m devcluster stop|start`` (SIGKILL, SIGSTOP,
and a start that first makes sure nothing holds the component's ports). Every test restores the node in
``finally`` (``start`` of every component: thaws frozen ones, starts dead ones) and waits until the node is
healthy again, so one failure cannot cascade into the next test.

The dashboard is the chart's pod (image from the Dockerfile, the chart's ServiceAccount and RBAC) reached
through ``kubectl port-forward``. While the apiserver is down a port-forward cannot exist (it runs through
the apiserver), so the apiserver test reads the dashboard's list stream at the pod's address from inside
the node instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from devcluster import cluster as devcluster_cluster
from devcluster import components as devcluster_components
from devcluster import kubeapi, node
from tests.chart.release import Release, port_forward
from tests.e2e.conftest import Cluster, EchoApp, deploy_echo_app, devcluster, wait_for
from tests.e2e.dashboard import hits, probe_body
from tests.e2e.released import chart_release

# The first test also waits for the image build and the chart install (minutes on a busy machine).
pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"
HEALTHY_TIMEOUT_S = 120.0
STALE_WITHIN_S = 30.0
STALE_RULES = "Service rules on the client's node look out of date"


def _record(name: str, value: object) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "faults-e2e.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = value
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


# -- the node's components --------------------------------------------------------------------------


def _apiserver_ready() -> bool:
    """/readyz of this instance's apiserver, over its host link."""
    try:
        return kubeapi.readyz()
    except OSError:
        return False


def _kill(name: str) -> None:
    """SIGKILL, as a crash; returns once the process is gone and its ports are free."""
    devcluster("stop", name, "--kill")


def _start(name: str) -> None:
    """Start it (a stray copy holding its ports is killed first); the test itself waits for it to be ready."""
    devcluster("start", name, "--no-wait")


@contextlib.contextmanager
def _stopped(name: str) -> Iterator[None]:
    """SIGSTOP the component (it keeps its ports and state; nothing answers), SIGCONT on the way out."""
    devcluster("stop", name, "--freeze")
    try:
        yield
    finally:
        devcluster("start", name, "--no-wait", check=False)


def _restore_node() -> None:
    """Thaw every component, start the dead ones, wait until the node is healthy. A node that is gone
    altogether (someone ran `down`) is brought back with `up`, so the next test does not inherit it."""
    holder = node.find_record(node.HOLDER)
    if holder is None or not holder.alive():
        devcluster("up", timeout=1800)
    devcluster("start", *devcluster_components.NAMES, timeout=HEALTHY_TIMEOUT_S * 3)
    wait_for(lambda: not devcluster_cluster.health().problems, HEALTHY_TIMEOUT_S, "a healthy node")


@pytest.fixture
def restore_node() -> Iterator[None]:
    _restore_node()  # never start a fault on a sick node
    try:
        yield
    finally:
        _restore_node()


# -- the dashboard, installed by the chart -----------------------------------------------------------


@dataclass
class Installed:
    cluster: Cluster
    release: Release
    namespace: str

    @property
    def kubectl_base(self) -> list[str]:
        return [str(self.cluster.bin_dir / "kubectl"), f"--kubeconfig={self.cluster.kubeconfig}"]

    def pod(self) -> dict[str, Any]:
        selector = f"app.kubernetes.io/name=svcscope,app.kubernetes.io/instance={self.release.name}"
        pods = self.cluster.ready_pods(self.namespace, selector)
        assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
        return pods[0]

    def pid(self) -> int:
        """The dashboard's process on this machine (its POD_NAME in its environment)."""
        name = self.pod()["metadata"]["name"].encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"POD_NAME=" + name in env and b"KUBERNETES_SERVICE_HOST" in b"".join(env):
                return int(entry.name)
        raise AssertionError(f"no process of pod {name!r}")

    def apiserver_address(self, pid: int) -> tuple[str, str]:
        env = dict(
            item.split(b"=", 1)
            for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if b"=" in item
        )
        return env[b"KUBERNETES_SERVICE_HOST"].decode(), env[b"KUBERNETES_SERVICE_PORT"].decode()

    def service(self, name: str, selector: str = "none") -> None:
        self.cluster.apply(
            f"""\
            apiVersion: v1
            kind: Service
            metadata: {{name: {name}}}
            spec:
              selector: {{app: {selector}}}
              ports: [{{port: 80, targetPort: 8080}}]
            """,
            self.namespace,
        )

    def delete_service(self, name: str) -> None:
        self.cluster.kubectl("delete", "service", name, "-n", self.namespace, "--wait=false")


@pytest.fixture(scope="module")
def installed(cluster: Cluster) -> Iterator[Installed]:
    namespace = f"e2e-faults-{uuid.uuid4().hex[:5]}"
    rel = chart_release(cluster, namespace)  # builds the image first
    cluster.create_namespace(namespace)
    try:
        rel.install()
        yield Installed(cluster, rel, namespace)
    finally:
        rel.uninstall(wait=False)
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture
def dash(installed: Installed, restore_node: None) -> Iterator[httpx.Client]:
    """An HTTP client to the dashboard through `kubectl port-forward` (opened after the node is healthy)."""
    wait_for(lambda: installed.pod(), 60, "the dashboard pod Ready")
    with port_forward(installed.kubectl_base, installed.namespace, installed.release.fullname) as url:
        with _client(url) as http:
            yield http


def _client(url: str) -> httpx.Client:
    # A new connection per request: kubectl port-forward may close an idle one under a kept-alive client.
    return httpx.Client(base_url=url, timeout=10.0, limits=httpx.Limits(max_keepalive_connections=0))


def _stale_body(http: httpx.Client) -> dict[str, Any]:
    body = _ready(http)
    return body if not body["current"] else {}


def _ready(http: httpx.Client) -> dict[str, Any]:
    r = http.get("/readyz")
    body: dict[str, Any] = r.json()
    body["http_status"] = r.status_code
    return body


def _listed(http: httpx.Client, namespace: str) -> set[str]:
    r = http.get("/api/v1/services", params={"namespace": namespace, "size": 500})
    r.raise_for_status()
    return {str(item["name"]) for item in r.json()["items"]}


# Inside the node: follow the dashboard's list stream at the pod's address and print when a name shows.
STREAM_SCRIPT = """\
import http.client, sys, time
ip, ns, name, limit = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
deadline = time.monotonic() + limit
resp = None
while resp is None:
    try:
        conn = http.client.HTTPConnection(ip, 8080, timeout=30)
        conn.request("GET", f"/streams/services?namespace={ns}", headers={"Host": "localhost"})
        resp = conn.getresponse()
    except OSError as exc:
        if time.monotonic() > deadline:
            print("error", repr(exc), flush=True)
            sys.exit(1)
        time.sleep(0.5)
print("open", resp.status, time.monotonic(), flush=True)
try:
    while time.monotonic() < deadline:
        line = resp.readline()
        if not line:
            print("closed", time.monotonic(), flush=True)
            break
        if name.encode() in line:
            print("seen", time.monotonic(), flush=True)
            break
except Exception as exc:
    print("error", repr(exc), time.monotonic(), flush=True)
"""


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    """One line of a helper's output, within a deadline."""
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], timeout)
    if not readable:
        raise AssertionError(f"no output within {timeout} s")
    return proc.stdout.readline().strip()


# -- the faults -----------------------------------------------------------------------------------


def test_apiserver_killed_during_an_open_list_stream(installed: Installed, dash: httpx.Client) -> None:
    """SIGKILL the apiserver for 20 s while a list stream is open: the stream stays up and flags nothing
    false, the lists are marked stale, and a Service created once the apiserver is ready again is on the
    open stream within 2 s of that moment."""
    ns = installed.namespace
    late = f"late-{uuid.uuid4().hex[:5]}"
    ip = installed.pod()["status"]["podIP"]
    follower = subprocess.Popen(
        [sys.executable, "-m", "devcluster", "exec", "--", "python3", "-c", STREAM_SCRIPT, ip, ns, late, "90"],  # noqa: E501
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        opened = _readline(follower, 30)
        assert opened.startswith("open 200"), opened
        restarts_before = installed.pod()["status"]["containerStatuses"][0]["restartCount"]
        _kill("kube-apiserver")
        killed = time.monotonic()
        stale_at = None
        while time.monotonic() - killed < 20:  # the fault lasts 20 s; meanwhile, is it flagged?
            if stale_at is None and _stale_from_node(ip):
                stale_at = time.monotonic() - killed
            time.sleep(0.5)
        _start("kube-apiserver")
        wait_for(_apiserver_ready, 60, "the apiserver ready again", interval=0.05)
        ready = time.monotonic()
        installed.service(late)
        created = time.monotonic()
        restarts = installed.pod()["status"]["containerStatuses"][0]["restartCount"]
        log = "" if restarts == restarts_before else _dashboard_log(installed, previous=True)
        assert restarts == restarts_before, f"the dashboard restarted during the fault:\n{log}"
        assert stale_at is not None and stale_at <= STALE_WITHIN_S, f"staleness flagged after {stale_at}"
        try:
            seen_line = _readline(follower, 30)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the dashboard said:\n{_dashboard_log(installed)}") from exc
        assert seen_line.startswith("seen"), seen_line
        seen = float(seen_line.split()[1])
        _record(
            "apiserver_kill",
            {
                "stale_flagged_after_s": round(stale_at, 1),
                "create_after_ready_s": round(created - ready, 2),
                "shown_after_ready_s": round(seen - ready, 2),
            },
        )
        assert seen - ready <= 2.0, f"shown {seen - ready:.2f} s after the apiserver was ready"
    finally:
        follower.kill()
        follower.wait(10)
        if follower.stdout is not None:
            follower.stdout.close()


def _dashboard_log(installed: Installed, *, previous: bool = False) -> str:
    pod = installed.pod()["metadata"]["name"]
    args = ["logs", "-n", installed.namespace, pod, "--tail=40", *(["--previous"] if previous else [])]
    proc = installed.cluster.kubectl(*args, check=False)
    return proc.stdout[-6000:] + proc.stderr[-500:]


PROBE_READYZ_SCRIPT = """\
import http.client, json, sys
conn = http.client.HTTPConnection(sys.argv[1], 8080, timeout=3)
conn.request("GET", "/readyz", headers={"Host": "localhost"})
print(json.dumps(json.loads(conn.getresponse().read())))
"""


def _stale_from_node(ip: str) -> bool:
    out = devcluster("exec", "--", "python3", "-c", PROBE_READYZ_SCRIPT, ip, check=False).stdout
    try:
        return not json.loads(out)["current"]
    except (ValueError, KeyError):
        return False


def test_forced_410_leaves_no_stale_object(installed: Installed, dash: httpx.Client) -> None:
    """The dashboard sleeps (SIGSTOP) through an apiserver restart, during which one Service is deleted
    and another created. Woken up, its watches resume from a resourceVersion the new apiserver no longer
    has (410 Gone): they re-list, and neither the deleted Service stays nor the new one is missing."""
    ns = installed.namespace
    old, new = f"old-{uuid.uuid4().hex[:5]}", f"new-{uuid.uuid4().hex[:5]}"
    installed.service(old)
    wait_for(lambda: old in _listed(dash, ns), 15, f"{old} listed")
    gone_before = _gone_restarts(dash)
    pid = installed.pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        _kill("kube-apiserver")
        _start("kube-apiserver")
        wait_for(_apiserver_ready, 60, "the apiserver ready again", interval=0.05)
        installed.delete_service(old)
        installed.service(new)
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: installed.pod(), 60, "the dashboard pod Ready again")
    with port_forward(installed.kubectl_base, ns, installed.release.fullname) as url:
        with _client(url) as http:
            woke = time.monotonic()
            wait_for(lambda: (lambda s: new in s and old not in s)(_listed(http, ns)), 20, "the new list")
            _record("forced_410", {"caught_up_after_wake_s": round(time.monotonic() - woke, 2)})
            assert _gone_restarts(http) > gone_before, "no watch was answered 410 Gone"


def _gone_restarts(http: httpx.Client) -> float:
    text = http.get("/metrics").text
    return sum(
        float(m.group(1))
        for m in re.finditer(r'^svcscope_watch_restarts_total\{[^}]*reason="gone"[^}]*\} (\S+)$', text, re.M)
    )


def test_etcd_stopped_is_flagged_within_30_s(installed: Installed, dash: httpx.Client) -> None:
    """etcd stops answering for 20 s: watches stay open but hear nothing. /readyz names the stale watches
    and every page carries the banner within 30 s; both clear once etcd is back."""
    assert _ready(dash)["current"] is True
    with _stopped("etcd"):
        stopped = time.monotonic()
        body = wait_for(lambda: _stale_body(dash), 35, "stale flag")
        flagged = time.monotonic() - stopped
        assert body["http_status"] == 200 and body["ready"] is True  # still serving what it has
        assert {w["resource"] for w in body["stale"]} >= {"services"}, body
        page = dash.get("/").text
        assert 'data-testid="stale-banner"' in page and "Last update" in page
        while time.monotonic() - stopped < 20:  # the fault lasts 20 s
            time.sleep(0.5)
    back = time.monotonic()
    wait_for(lambda: _ready(dash)["current"], 30, "current again")
    _record(
        "etcd_stop",
        {"flagged_after_s": round(flagged, 1), "current_after_s": round(time.monotonic() - back, 1)},
    )
    assert flagged <= STALE_WITHIN_S
    assert 'data-testid="stale-banner"' not in dash.get("/").text


def _pod_netns_rules(pid: int, host: str, port: str, action: str) -> None:
    """Drop (``-I``) or allow again (``-D``) the dashboard pod's traffic to the apiserver, inside the pod's
    own network namespace (its path to the kubernetes Service address, both directions)."""
    for chain, direction in (
        ("OUTPUT", ("-d", host, "--dport", port)),
        ("INPUT", ("-s", host, "--sport", port)),
    ):
        devcluster(
            "exec", "--", "nsenter", f"--net=/proc/{pid}/ns/net",
            "iptables", "-w", action, chain, "-p", "tcp", *direction, "-j", "DROP",
            check=action == "-I",
        )  # fmt: skip


def test_partition_is_flagged_and_caught_up_after(installed: Installed, dash: httpx.Client) -> None:
    """40 s without a path from the dashboard to the apiserver: flagged within 30 s; a Service deleted and
    one created meanwhile are right within 5 s after the path is back."""
    ns = installed.namespace
    before, during = f"before-{uuid.uuid4().hex[:5]}", f"during-{uuid.uuid4().hex[:5]}"
    installed.service(before)
    wait_for(lambda: before in _listed(dash, ns), 15, f"{before} listed")
    pid = installed.pid()
    host, port = installed.apiserver_address(pid)
    _pod_netns_rules(pid, host, port, "-I")
    try:
        cut = time.monotonic()
        wait_for(lambda: not _ready(dash)["current"], 35, "stale flag")
        flagged = time.monotonic() - cut
        installed.delete_service(before)
        installed.service(during)
        still = _listed(dash, ns)
        assert before in still and during not in still  # stale, and flagged as such
        while time.monotonic() - cut < 40:  # the fault lasts 40 s
            time.sleep(0.5)
    finally:
        _pod_netns_rules(pid, host, port, "-D")
    healed = time.monotonic()
    wait_for(
        lambda: (lambda s: during in s and before not in s)(_listed(dash, ns)) and _ready(dash)["current"],
        15,
        "caught up",
        interval=0.1,
    )
    caught_up = time.monotonic() - healed
    _record("partition", {"flagged_after_s": round(flagged, 1), "caught_up_after_s": round(caught_up, 2)})
    assert flagged <= STALE_WITHIN_S
    assert caught_up <= 5.0


@pytest.fixture
def echo(installed: Installed, dash: httpx.Client) -> Iterator[EchoApp]:
    name = f"echo-{uuid.uuid4().hex[:4]}"
    app = deploy_echo_app(installed.cluster, installed.namespace, name, replicas=3)
    try:
        yield app
    finally:
        installed.cluster.kubectl(
            "delete", "deployment,service", name, "-n", installed.namespace, "--wait=false"
        )


def _probe(http: httpx.Client, body: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    r = http.post("/api/v1/probes", json=body)
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]

    def finished() -> dict[str, Any]:
        run: dict[str, Any] = http.get(f"/api/v1/probes/{run_id}").json()
        return run if run["status"] != "running" else {}

    return wait_for(finished, timeout, f"run {run_id} finished", interval=0.3)


def _serving(http: httpx.Client, app: EchoApp, pods: int) -> bool:
    run = _probe(http, probe_body(app, count=30, concurrency=3, timeout_s=1.0))
    return not run["errors"] and sum(1 for n in hits(run).values() if n) == pods


def test_kube_proxy_down_with_a_pod_replaced_gets_the_stale_rules_hint(
    installed: Installed, dash: httpx.Client, echo: EchoApp
) -> None:
    """kube-proxy stopped for 30 s and one pod replaced meanwhile: the new pod answers directly but not
    through the ClusterIP, and requests to the old address time out. The run says so instead of blaming
    balancing."""
    wait_for(lambda: _serving(dash, echo, 3), 60, "the Service serving all 3 pods")
    with _stopped("kube-proxy"):
        stopped = time.monotonic()
        victim = installed.cluster.pods(echo.namespace, echo.selector)[0]["metadata"]["name"]
        installed.cluster.kubectl("delete", "pod", victim, "-n", echo.namespace, "--wait=false")

        def replaced() -> bool:
            r = dash.get(f"/api/v1/services/{echo.namespace}/{echo.name}")
            data = r.json()
            return bool(data["service"]["endpoints_ready"] == 3 and victim not in json.dumps(data))

        wait_for(replaced, 25, "3 ready endpoints without the old pod")
        run = _probe(dash, probe_body(echo, count=120, concurrency=6, timeout_s=1.0))
        _record(
            "kube_proxy_down",
            {
                "errors": run["errors"],
                "hits": hits(run),
                "verdict": run["verdict"],
                "after_s": round(time.monotonic() - stopped, 1),
            },
        )
        assert STALE_RULES in run["verdict"], run["verdict"]
        assert any("answered the direct probe" in e for e in run["explanations"]), run["explanations"]
        while time.monotonic() - stopped < 30:  # the fault lasts 30 s
            time.sleep(0.5)
    wait_for(lambda: _serving(dash, echo, 3), 60, "kube-proxy's rules current again")


def test_coredns_at_zero_replicas_changes_nothing(
    installed: Installed, dash: httpx.Client, echo: EchoApp
) -> None:
    """The dashboard needs no DNS: it reaches the apiserver by address and probes ClusterIPs."""
    devcluster("stop", "coredns", timeout=180)  # scaled to 0, returns once no CoreDNS pod is left
    try:
        body = _ready(dash)
        assert body["http_status"] == 200 and body["current"] is True, body
        assert echo.name in _listed(dash, echo.namespace)
        run = _probe(dash, probe_body(echo, count=60, concurrency=3, timeout_s=1.0))
        assert run["errors"] == {} and sum(hits(run).values()) == 60, run
    finally:
        devcluster("start", "coredns", timeout=180)  # back to its one replica, returns once it is available
