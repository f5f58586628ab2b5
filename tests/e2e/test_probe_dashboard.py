"""The dashboard as a process inside the node's network namespace, driven over HTTP from the host.

That is where users run it (in the cluster), until the image of the "Ship it" issue is deployed:
it binds 0.0.0.0 inside the namespace and the host reaches it at the namespace's link address.
Used by tests/e2e/test_probe.py and bench/probe_rate.py. (No tests in this module.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

REPO = Path(__file__).resolve().parents[2]
LINK_ADDRESS = "198.18.255.254"  # the node namespace's side of the host link
KUBECONFIG = "/var/lib/svcscope-devcluster/admin.kubeconfig"
TERMINAL = ("done", "cancelled", "failed", "timed_out")


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
    port = port or 18000 + os.getpid() % 1000
    log_path = Path(f"/tmp/svcscope-probe-dashboard-{port}.log")
    settings = {
        "SVCSCOPE_KUBECONFIG": KUBECONFIG,
        "SVCSCOPE_ALLOWED_HOSTS": LINK_ADDRESS,
        "SVCSCOPE_PROBE_MAX_RUNS_PER_MINUTE": "1000",
        "SVCSCOPE_PROBE_RUNS_KEPT": "200",
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
