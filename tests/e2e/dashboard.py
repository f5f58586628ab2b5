"""The dashboard as a process inside the node's network namespace, driven over HTTP from the host, and
the helpers the probe tests share (deploy an echo app, wait until kube-proxy serves it, read hits).

Inside the namespace it probes from where users run it (in the cluster) without building the image:
it binds 0.0.0.0 there and the host reaches it at the namespace's link address.
Used by the e2e probe tests and bench/probe_rate.py. (No tests in this module.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from devcluster import paths
from tests.e2e.conftest import EchoApp, wait_for

REPO = Path(__file__).resolve().parents[2]
# The instance named by SVCSCOPE_DC_INSTANCE (the default one without it): the node namespace's side of its
# host link, and its admin kubeconfig. `devcluster exec` below enters that same instance.
LINK_ADDRESS = paths.NS_LINK_IP
KUBECONFIG = str(paths.ADMIN_KUBECONFIG)
TERMINAL = ("done", "cancelled", "failed", "timed_out")
# This dashboard runs with the admin kubeconfig: its write features would be tested with credentials no user
# has. They are tested through the installed chart and its RBAC instead (tests/e2e/released.py).
WRITE_FEATURES = (
    "SVCSCOPE_PROBE_ORIGINS",
    "SVCSCOPE_ALLOW_AFFINITY_PATCH",
    "SVCSCOPE_WRITABLE_NAMESPACES",
    "SVCSCOPE_PROBE_POD_NAMESPACE",
)


@dataclass
class Dashboard:
    proc: subprocess.Popen[bytes]
    base_url: str
    http: httpx.Client
    log_path: Path
    log: IO[bytes]

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def start(self, **body: Any) -> str:
        r = self.http.post("/api/v1/probes", json=body)
        assert r.status_code == 202, f"{r.status_code} {r.text}"
        run_id: str = r.json()["id"]
        return run_id

    def run(self, run_id: str) -> dict[str, Any]:
        r = self.http.get(f"/api/v1/probes/{run_id}")
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    def wait_run(self, run_id: str, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            data = self.run(run_id)
            if data["status"] in TERMINAL:
                return data
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"run {run_id} still {data['status']} after {timeout} s: {data['done']} done"
                )
            time.sleep(0.2)

    def probe(self, timeout: float = 120.0, **body: Any) -> dict[str, Any]:
        return self.wait_run(self.start(**body), timeout)

    def wait_endpoints(self, namespace: str, service: str, ready: int, timeout: float = 60.0) -> None:
        """Until the dashboard's watch cache shows ``ready`` ready endpoints for the Service."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            r = self.http.get(f"/api/v1/services/{namespace}/{service}")
            if r.status_code == 200:
                last = r.json()["service"]["endpoints_ready"]
                if last == ready:
                    return
            else:
                last = r.status_code
            time.sleep(0.2)
        raise AssertionError(
            f"dashboard never saw {ready} ready endpoints of {namespace}/{service} (last {last})"
        )

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


def start_dashboard(
    port: int | None = None, *, env: dict[str, str] | None = None, timeout: float = 60.0
) -> Dashboard:
    """uvicorn with the app factory inside the node namespace (``python -m devcluster exec``)."""
    if enabled := [k for k in WRITE_FEATURES if (env or {}).get(k)]:
        raise AssertionError(
            f"{', '.join(enabled)}: a write feature runs here with the admin kubeconfig; test it through "
            "the chart with its own RBAC (tests/e2e/released.py)"
        )
    port = port or 18000 + os.getpid() % 1000
    log_path = Path(f"/tmp/svcscope-probe-dashboard-{port}.log")
    settings = {
        "SVCSCOPE_KUBECONFIG": KUBECONFIG,
        "SVCSCOPE_ALLOWED_HOSTS": LINK_ADDRESS,
        "SVCSCOPE_PROBE_MAX_RUNS_PER_MINUTE": "1000",
        "SVCSCOPE_PROBE_RUNS_KEPT": "200",
        "SVCSCOPE_STORE_PATH": "",  # runs in memory only, unless ``env`` gives the store a file
        # The node's shell starts in /, so ``app`` would come from wherever the venv's editable install
        # points (another checkout's code, for a venv shared by worktrees): this checkout's, always.
        "PYTHONPATH": str(REPO),
        **(env or {}),
    }
    cmd = [
        sys.executable,
        "-m",
        "devcluster",
        "exec",
        "--",
        "env",
        *(f"{k}={v}" for k, v in settings.items()),
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "app.main:create_app",
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
        "--http",
        "app.web.server:LingeringH11Protocol",
        "--timeout-graceful-shutdown",
        "2",
        "--no-access-log",
    ]
    log = log_path.open("wb")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base_url = f"http://{LINK_ADDRESS}:{port}"
    http = httpx.Client(base_url=base_url, timeout=10.0)
    dash = Dashboard(proc, base_url, http, log_path, log)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            dash.stop()
            raise AssertionError(f"dashboard exited {proc.returncode}:\n{dash.log_tail()}")
        try:
            if http.get("/readyz").status_code == 200:
                return dash
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            dash.stop()
            raise AssertionError(f"dashboard not ready after {timeout} s:\n{dash.log_tail()}")
        time.sleep(0.2)


# -- shared by the probe tests


def hits(run: dict[str, Any]) -> dict[str, int]:
    return {p["pod"]: p["hits"] for p in run["pods"]}


def probe_body(app: EchoApp, **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "namespace": app.namespace,
        "service": app.name,
        "port": "http",
        "protocol": "HTTP",
    }
    body.update(kw)
    return body


def deployed(
    deploy_echo: Callable[..., EchoApp], dashboard: Dashboard, namespace: str, replicas: int = 3, **kw: Any
) -> EchoApp:
    app = deploy_echo(namespace, replicas=replicas, **kw)
    dashboard.wait_endpoints(namespace, app.name, replicas)
    # Identical replies cannot tell pods apart, and ClientIP affinity sends every probe to one pod.
    one_pod_view = (kw.get("env") or {}).get("ECHO_MODE") == "identical" or "ClientIP" in kw.get(
        "service_spec", ""
    )
    wait_serving(dashboard, probe_body(app), None if one_pod_view else replicas)
    return app


def wait_serving(
    dashboard: Dashboard | httpx.Client,
    body: dict[str, Any],
    pods: int | None = None,
    *,
    count: int = 24,
    timeout: float = 60.0,
) -> None:
    """kube-proxy programs its rules on its own schedule, after the EndpointSlices the dashboard sees:
    until then connections to the ClusterIP are refused, or reach only the endpoints of its last sync.
    Wait until a small probe (``count`` requests, at most 3 at a time) gets no error and (when ``pods`` is
    given) reaches that many pods. Takes the Dashboard or the HTTP client of a port-forwarded release."""
    http = dashboard.http if isinstance(dashboard, Dashboard) else dashboard
    small = {**body, "count": count, "concurrency": min(count, 3, int(body.get("concurrency", 3)))}
    last: dict[str, Any] = {}

    def clean() -> bool:
        nonlocal last
        r = http.post("/api/v1/probes", json=small)
        assert r.status_code == 202, f"{r.status_code} {r.text}"
        run_id = r.json()["id"]
        last = wait_for(lambda: _ended(http, run_id), 120, f"run {run_id} to end", interval=0.2)
        answered = sum(1 for p in last["pods"] if p["hits"])
        return not last["errors"] and (pods is None or answered == pods)

    try:
        wait_for(clean, timeout, "kube-proxy to route the Service", interval=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last run: errors {last.get('errors')}, hits {_hits_of(last)}") from None


def _ended(http: httpx.Client, run_id: str) -> dict[str, Any] | None:
    r = http.get(f"/api/v1/probes/{run_id}")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data if data["status"] in TERMINAL else None


def _hits_of(run: dict[str, Any]) -> dict[str, int]:
    return hits(run) if "pods" in run else {}


def sigkill_dashboard(pod: str) -> None:
    """SIGKILL the dashboard's process of ``pod`` the way the OOM killer would: from outside, by its PID on
    the node (the node's processes share the host's PID namespace). Found by the pod's own name in its
    environment, so nothing else is touched."""
    marker = f"POD_NAME={pod}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in environ and b"uvicorn" in cmdline:
            os.kill(int(entry.name), signal.SIGKILL)
            return
    raise AssertionError(f"no uvicorn process of pod {pod} found")
