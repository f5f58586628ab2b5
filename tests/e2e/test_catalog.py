"""The Service catalog against the real devcluster: live SSE updates, apiserver restart, forced 410, RBAC.

The app runs as a real uvicorn server (a thread, or a subprocess where it must be frozen) on 127.0.0.1 with
the devcluster's admin kubeconfig; SSE streams are read by a background thread that timestamps events.
Every wait polls with a deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.e2e.conftest import REPO, Cluster, echo_manifest, wait_for
from tests.netutil import free_port

pytestmark = pytest.mark.e2e

LIVE_S = 1.0  # the catalog must reflect a change within this long


# -- a real server ------------------------------------------------------------------------------------


@contextlib.contextmanager
def server_in_thread(settings: Settings) -> Iterator[str]:
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=0, log_level="warning", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="svcscope-e2e", daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "uvicorn started")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
        assert not thread.is_alive(), "uvicorn did not stop"


@contextlib.contextmanager
def server_process(env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "app.main:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--timeout-graceful-shutdown",
            "2",
            "--log-level",
            "warning",
        ],
        cwd=REPO,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def ready(url: str, timeout: float = 60) -> None:
    wait_for(lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200, timeout, "app /readyz")


class SseRecorder:
    """Reads an SSE stream in a thread; keeps (monotonic time, event, data) of every event."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events: list[tuple[float, str, str]] = []
        self.cond = threading.Condition()
        self.client = httpx.Client(timeout=httpx.Timeout(5, read=None))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None
        self.response: httpx.Response | None = None
        self.thread.start()

    def _run(self) -> None:
        try:
            with self.client.stream("GET", self.url) as resp:
                self.response = resp
                event, data = "", []
                for line in resp.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        data.append(line[6:])
                    elif line == "" and event:
                        with self.cond:
                            self.events.append((time.monotonic(), event, "\n".join(data)))
                            self.cond.notify_all()
                        event, data = "", []
        except Exception as exc:  # closed by close() or the server
            self.error = exc

    def first(self, event: str, pred: Callable[[str], bool], timeout: float, since: float = 0.0) -> float:
        """Time of the first ``event`` after ``since`` whose data satisfies ``pred`` (waits up to timeout)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, name, data in self.events:
                    if t >= since and name == event and pred(data):
                        return t
                left = deadline - time.monotonic()
                if left <= 0:
                    last = [(n, d[-300:]) for _, n, d in self.events[-2:]]
                    raise AssertionError(f"no {event!r} event matched within {timeout} s; last: {last}")
                self.cond.wait(left)

    def close(self) -> None:
        if self.response is not None:
            self.response.close()  # drops the connection: the server sees the client go
        self.client.close()
        self.thread.join(10)


def api_endpoint_state(cluster: Cluster, ns: str, name: str) -> tuple[int, int]:
    """(ready, total) endpoints of a Service as the apiserver has them (same counting as the cache)."""
    slices = cluster.get("endpointslices", "-n", ns, "-l", f"kubernetes.io/service-name={name}")
    seen: dict[str, bool] = {}
    for s in slices["items"]:
        for ep in s.get("endpoints") or []:
            ref = (ep.get("targetRef") or {}).get("name") or ",".join(ep["addresses"])
            seen[ref] = seen.get(ref, False) or (ep.get("conditions") or {}).get("ready") is not False
    return sum(seen.values()), len(seen)


def counts_marker(ready_n: int, total: int) -> Callable[[str], bool]:
    marker = f'data-ready="{ready_n}" data-total="{total}"'
    return lambda html: marker in html


def row_marker(ready_n: int, total: int) -> Callable[[str], bool]:
    marker = f'data-endpoints="{ready_n}/{total}"'
    return lambda html: marker in html


# -- tests --------------------------------------------------------------------------------------------


def test_list_and_detail_follow_a_deployment_live(cluster: Cluster, namespace: str) -> None:
    settings = Settings(kubeconfig=str(cluster.kubeconfig), csrf_secret="e2e")
    with server_in_thread(settings) as url:
        ready(url)
        rows = SseRecorder(f"{url}/streams/services?namespace={namespace}")
        detail = SseRecorder(f"{url}/streams/services/{namespace}/echo")
        try:
            rows.first("rows", lambda h: "No Services match" in h, 10)

            # create: the row appears within 1 s of the apiserver accepting the Service
            created = time.monotonic()
            cluster.apply(echo_manifest("echo", replicas=2), namespace)
            t = rows.first("rows", lambda h: ">echo</a>" in h, 10)
            assert t - created <= LIVE_S, f"row appeared {t - created:.2f} s after create"

            # scale up and down: endpoints as the apiserver has them, within 1 s of being observable there
            changed = created
            for replicas in (2, 3, 1):
                if replicas != 2:
                    changed = time.monotonic()
                    cluster.kubectl("scale", "deployment/echo", f"--replicas={replicas}", "-n", namespace)
                want = (replicas, replicas)
                wait_for(
                    partial(lambda w: api_endpoint_state(cluster, namespace, "echo") == w, want),
                    120,
                    f"{replicas} ready endpoints in the apiserver",
                )
                observed = time.monotonic()
                t = detail.first("detail", counts_marker(*want), 10, since=changed)
                assert t - observed <= LIVE_S, f"detail showed {want} {t - observed:.2f} s late"
                t = rows.first("rows", row_marker(*want), 10, since=changed)
                assert t - observed <= LIVE_S, f"row showed {want} {t - observed:.2f} s late"

            # the full page and the JSON agree with the stream
            page = httpx.get(f"{url}/services/{namespace}/echo").text
            assert "http:80→http/TCP" in page and "echo-" in page
            body = httpx.get(f"{url}/api/v1/services/{namespace}/echo").json()
            assert (
                body["service"]["endpoints_ready"] == 1 and body["ports"][0]["port"]["target_port"] == "http"
            )
            assert all(n == 8080 for n in body["ports"][0]["per_pod"].values())

            # delete: the row goes away and the detail says so
            deleted = time.monotonic()
            cluster.kubectl("delete", "service/echo", "deployment/echo", "-n", namespace, "--wait=false")
            t = rows.first("rows", lambda h: ">echo</a>" not in h, 10, since=deleted)
            assert t - deleted <= LIVE_S
            t = detail.first("detail", lambda h: "no longer exists" in h, 10, since=deleted)
            assert t - deleted <= LIVE_S
        finally:
            rows.close()
            detail.close()

        # errors against the real app: 404 page and JSON, 422 with a message
        r = httpx.get(f"{url}/services/{namespace}/echo")
        assert r.status_code == 404 and "not found" in r.text and "Traceback" not in r.text
        r = httpx.get(f"{url}/api/v1/services/{namespace}/nope")
        assert r.status_code == 404 and "not found" in r.json()["detail"]
        r = httpx.get(f"{url}/api/v1/services?page=0")
        assert r.status_code == 422 and "page" in r.json()["detail"]
        r = httpx.get(f"{url}/?sort=nope")
        assert r.status_code == 422 and "sort" in r.text


def _metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


ETCD_COMPACT = (
    "import json, urllib.request as u\n"
    "def post(path, body):\n"
    "    req = u.Request('http://127.0.0.1:2379' + path, data=json.dumps(body).encode(), method='POST')\n"
    "    return json.load(u.urlopen(req, timeout=10))\n"
    "rev = int(post('/v3/kv/range', {'key': 'AA=='})['header']['revision'])\n"
    "post('/v3/kv/compaction', {'revision': rev, 'physical': True})\n"
    "print(rev)\n"
)


def restart_apiserver() -> None:
    """Kill kube-apiserver and start it again with the same arguments, holding devcluster's lock.

    The lock (held until ``devcluster status`` would say healthy) keeps a concurrent ``devcluster up``
    (another session's fixture) from seeing the node unhealthy meanwhile and rebuilding it.
    """
    from devcluster import cluster as dc
    from devcluster import config, kubeapi, node

    with dc._locked():
        rec = node.find_record("kube-apiserver")
        holder = node.find_record(node.HOLDER)
        assert rec is not None and holder is not None and rec.alive()
        specs = config.components(Path(dc.BIN_DIR_RECORD.read_text().strip()))
        # SIGKILL, a crash: a graceful SIGTERM can hang for minutes while a watch client (here the
        # frozen app) does not read, leaving the shared node without an apiserver.
        os.kill(rec.pid, signal.SIGKILL)
        wait_for(lambda: not rec.alive(), 30, "old kube-apiserver gone")
        new = node.start(specs["kube-apiserver"], holder)
        node.wait_for("apiserver /readyz", kubeapi.readyz, timeout=90, blame="kube-apiserver", watch=[new])
        # Keep the lock until the whole node is healthy again (node Ready, CoreDNS available): a
        # concurrent `up` that saw it unhealthy would rebuild the shared node from scratch.
        node.wait_for("node healthy", lambda: not dc.health().problems, timeout=120, blame="kube-apiserver")


def _names(url: str, namespace: str) -> set[str]:
    body = httpx.get(f"{url}/api/v1/services", params={"namespace": namespace, "size": 500}, timeout=5).json()
    return {item["name"] for item in body.get("items", [])}


def plain_service(name: str) -> str:
    return f"""\
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  ports: [{{port: 80}}]
"""


def test_apiserver_restart_and_forced_410_relist(cluster: Cluster, namespace: str) -> None:
    """Freeze the app, restart the apiserver, change objects, compact etcd, thaw the app.

    Its watch connections are gone and its resourceVersion is older than both etcd's compacted
    revision and the restarted apiserver's watch cache: the re-watch gets 410 Gone and the app must
    re-list to show the current state.
    """
    env = {
        "SVCSCOPE_KUBECONFIG": str(cluster.kubeconfig),
        "SVCSCOPE_NAMESPACES": namespace,
        "SVCSCOPE_CSRF_SECRET": "e2e",
        "SVCSCOPE_WATCH_BACKOFF_MAX_S": "2",
    }
    cluster.apply(plain_service("before"), namespace)
    with server_process(env) as (url, proc):
        wait_for(
            lambda: proc.poll() is None and httpx.get(f"{url}/readyz", timeout=2).status_code == 200,
            60,
            "app",
        )
        wait_for(lambda: _names(url, namespace) == {"before"}, 10, "app sees 'before'")
        gone_before = _metric(url, "svcscope_watch_restarts_total", reason="gone")
        lists_before = _metric(url, "svcscope_watch_lists_total", resource="services")

        os.kill(proc.pid, signal.SIGSTOP)
        try:
            # Move etcd's revision on with an object the app does not watch, so that the restarted
            # apiserver's watch cache starts after the app's resourceVersion. Restart first, change
            # Services afterwards: events sent before the crash could sit unread in the frozen app's
            # socket buffer and move its resourceVersion on.
            cluster.kubectl("create", "configmap", "bump-revision", "-n", namespace)
            restart_apiserver()
            for i in range(3):
                cluster.apply(plain_service(f"during-{i}"), namespace)
            cluster.kubectl("delete", "service", "before", "-n", namespace)
            rev = cluster.exec_in_netns("python3", "-c", ETCD_COMPACT).stdout.strip()
            assert rev.isdigit()
        finally:
            os.kill(proc.pid, signal.SIGCONT)

        expected = {"during-0", "during-1", "during-2"}
        wait_for(lambda: _names(url, namespace) == expected, 60, f"app shows {expected}")
        metrics = [m for m in httpx.get(f"{url}/metrics").text.splitlines() if m.startswith("svcscope_watch")]
        assert _metric(url, "svcscope_watch_restarts_total", reason="gone") > gone_before, metrics
        assert _metric(url, "svcscope_watch_lists_total", resource="services") > lists_before
        # and it keeps watching after the re-list
        cluster.apply(plain_service("after"), namespace)
        wait_for(lambda: "after" in _names(url, namespace), 10, "app sees 'after'")


@pytest.fixture
def other_namespace(cluster: Cluster, namespace: str) -> Iterator[str]:
    name = f"{namespace[:50]}-other"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def limited_kubeconfig(cluster: Cluster, namespace: str, path: Path) -> Path:
    """A kubeconfig for a ServiceAccount that may only get/list/watch services, endpointslices, pods in ns."""
    cluster.apply(
        f"""\
apiVersion: v1
kind: ServiceAccount
metadata: {{name: svcscope-reader}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: svcscope-reader}}
rules:
  - apiGroups: [""]
    resources: [services, pods]
    verbs: [get, list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: svcscope-reader}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: svcscope-reader}}
subjects: [{{kind: ServiceAccount, name: svcscope-reader, namespace: {namespace}}}]
""",
        namespace,
    )
    token = cluster.kubectl(
        "create", "token", "svcscope-reader", "-n", namespace, "--duration=1h"
    ).stdout.strip()
    admin: dict[str, Any] = yaml.safe_load(cluster.kubeconfig.read_text())
    cluster_entry = admin["clusters"][0]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster_entry],
                "users": [{"name": "reader", "user": {"token": token}}],
                "contexts": [
                    {"name": "reader", "context": {"cluster": cluster_entry["name"], "user": "reader"}}
                ],
                "current-context": "reader",
            }
        )
    )
    return path


def _wait_ready(client: TestClient) -> dict[str, Any]:
    wait_for(lambda: client.get("/readyz").status_code == 200, 60, "readyz with a limited token")
    body: dict[str, Any] = client.get("/readyz").json()
    return body


def test_service_account_limited_to_one_namespace(
    cluster: Cluster, namespace: str, other_namespace: str, tmp_path: Path
) -> None:
    cluster.apply(plain_service("visible"), namespace)
    cluster.apply(plain_service("hidden"), other_namespace)
    kubeconfig = limited_kubeconfig(cluster, namespace, tmp_path / "reader.kubeconfig")

    # Scoped to both namespaces: the allowed one works, the other is named as Forbidden.
    settings = Settings(
        kubeconfig=str(kubeconfig), namespaces=[namespace, other_namespace], csrf_secret="e2e"
    )
    with TestClient(create_app(settings), base_url="http://localhost") as client:
        body = _wait_ready(client)
        assert {p["scope"] for p in body["problems"]} == {other_namespace}
        wait_for(
            lambda: (
                [i["name"] for i in client.get(f"/api/v1/services?namespace={namespace}").json()["items"]]
                == ["visible"]
            ),
            10,
            "the allowed namespace is listed",
        )
        listing = client.get("/api/v1/services").json()
        assert "hidden" not in {i["name"] for i in listing["items"]}
        messages = {(p["resource"], p["scope"]): p["message"] for p in listing["problems"]}
        assert set(messages) == {(r, other_namespace) for r in ("services", "endpointslices", "pods")}
        assert all("Forbidden" in m and "RBAC" in m for m in messages.values())
        page = " ".join(client.get("/").text.split())
        assert (
            f"Forbidden: svcscope may not list/watch services in namespace &#39;{other_namespace}&#39;"
            in page
        )
        assert client.get(f"/services/{namespace}/visible").status_code == 200

    # All namespaces: nothing can be listed cluster-wide, and the page says why and what to do.
    settings = Settings(kubeconfig=str(kubeconfig), csrf_secret="e2e")
    with TestClient(create_app(settings), base_url="http://localhost") as client:
        body = _wait_ready(client)
        assert {p["scope"] for p in body["problems"]} == {"*"}
        page = " ".join(client.get("/").text.split())
        assert "may not list/watch services cluster-wide" in page and "SVCSCOPE_NAMESPACES" in page
        assert re.search(r"0 Services", page)
