"""The dashboard as users run it, for the e2e tests of its write features: the chart installed with its own
ServiceAccount and RBAC, the image from the Dockerfile (SVCSCOPE_IMAGE), reached through
``kubectl port-forward``. Yields the same ``Dashboard`` the probe helpers take. (No tests in this module.)
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import httpx

from scripts import demo
from tests.chart.helmtool import CHART
from tests.chart.release import Release, image_sets, port_forward
from tests.e2e.conftest import REPO, Cluster, wait_for
from tests.e2e.dashboard import Dashboard


class _Forwarded:
    """In place of the dashboard's process: the pod belongs to the release, the test only closes its HTTP."""

    returncode = None

    def poll(self) -> None:
        return None

    def terminate(self) -> None:
        return None

    def kill(self) -> None:
        return None

    def wait(self, timeout: float | None = None) -> int:
        return 0


def dashboard_pod(cluster: Cluster, rel: Release) -> dict[str, Any]:
    selector = f"app.kubernetes.io/name=svcscope,app.kubernetes.io/instance={rel.name}"
    (pod,) = cluster.ready_pods(rel.namespace, selector)
    return pod


# The chart's 30 runs per minute is for people; the helpers poll with small runs until kube-proxy has synced.
TEST_ENV = {"SVCSCOPE_PROBE_MAX_RUNS_PER_MINUTE": "1000"}


def install(rel: Release, sets: tuple[str, ...], env: dict[str, str]) -> None:
    """``Release.install`` plus environment variables (config.extraEnv; --set would make numbers of them)."""
    rel.sets = list(sets)
    extra = json.dumps([{"name": k, "value": v} for k, v in env.items()])
    rel.helm(
        "upgrade", "--install", rel.name, str(CHART), "--namespace", rel.namespace, "--reset-values",
        *[a for s in [*image_sets(), *sets] for a in ("--set", s)], "--set-json", f"config.extraEnv={extra}",
    )  # fmt: skip
    rel.wait_ready()


class ForwardedClient(httpx.Client):
    """An HTTP client through ``kubectl port-forward`` that opens a new forward when the old one is gone.

    kubectl ends a forward on its own now and then on this loaded single-node cluster ("lost connection to
    pod"). That is kubectl's, not the dashboard's: reads are retried once through a new forward; a POST only
    when it never reached the dashboard (a refused connection), so no run is started twice. Whether the
    dashboard itself stayed up is checked separately (its container's restart count)."""

    def __init__(self, reopen: Callable[[], str]) -> None:
        self._reopen = reopen
        self.reconnects = 0
        super().__init__(base_url=reopen(), timeout=30.0)

    def request(self, method: str, url: Any, *args: Any, **kwargs: Any) -> httpx.Response:
        try:
            return super().request(method, url, *args, **kwargs)
        except (httpx.ConnectError, httpx.RemoteProtocolError) as exc:
            if method != "GET" and not isinstance(exc, httpx.ConnectError):
                raise
            self.reconnects += 1
            self.base_url = httpx.URL(self._reopen())
            return super().request(method, url, *args, **kwargs)


@contextlib.contextmanager
def forwarded(cluster: Cluster, rel: Release) -> Iterator[ForwardedClient]:
    """A client of the release's dashboard through `kubectl port-forward`, once it answers /readyz."""
    kubectl = [str(cluster.bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}"]
    with contextlib.ExitStack() as forwards:

        def reopen() -> str:
            forwards.close()
            return forwards.enter_context(port_forward(kubectl, rel.namespace, rel.fullname))

        with ForwardedClient(reopen) as client:
            wait_for(lambda: client.get("/readyz").status_code == 200, 60, "the dashboard ready")
            yield client


def build_image_for(cluster: Cluster) -> None:
    """Build the image and import it into every node of ``cluster``. devcluster's paths belong to the
    environment's instance, so another instance (the multi-node one) is served by a child process."""
    if cluster.instance is None:
        demo.build_image()
        return
    proc = subprocess.run(
        [sys.executable, "-c", "from scripts import demo; demo.build_image()"],
        cwd=REPO,
        env={**os.environ, "SVCSCOPE_DC_INSTANCE": cluster.instance},
        capture_output=True,
        text=True,
        timeout=1800,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 0, f"importing the image into {cluster.instance} failed:\n{proc.stderr[-4000:]}"


def chart_release(cluster: Cluster, namespace: str) -> Release:
    """The chart as a release in ``namespace``, with the image this checkout built (built and imported)."""
    build_image_for(cluster)
    return Release(
        namespace=namespace,
        kubectl=cluster.kubectl,
        helm_base=[str(cluster.bin_dir / "helm"), "--kubeconfig", str(cluster.kubeconfig)],
    )


@contextlib.contextmanager
def released_dashboard(
    cluster: Cluster, namespace: str, *sets: str, env: dict[str, str] | None = None
) -> Iterator[tuple[Release, Dashboard]]:
    """Install the chart into ``namespace`` with these values; the dashboard through a port-forward."""
    rel = chart_release(cluster, namespace)
    try:
        install(rel, sets, {**TEST_ENV, **(env or {})})
        pod = dashboard_pod(cluster, rel)
        # The bar: a feature test runs the release with the chart's own credentials, never an admin's.
        assert pod["spec"]["serviceAccountName"] == rel.fullname
        names = {e["name"] for e in pod["spec"]["containers"][0].get("env", [])}
        assert not names & {"SVCSCOPE_KUBECONFIG", "KUBECONFIG"}
        with forwarded(cluster, rel) as http, open(os.devnull, "wb") as log:
            yield rel, Dashboard(cast(Any, _Forwarded()), str(http.base_url), http, Path(os.devnull), log)
            if http.reconnects:
                print(f"\nkubectl port-forward was reopened {http.reconnects} time(s)")
        selector = f"app.kubernetes.io/name=svcscope,app.kubernetes.io/instance={rel.name}"
        for pod in cluster.pods(namespace, selector):
            (status,) = pod["status"]["containerStatuses"]
            assert status["restartCount"] == 0, f"the dashboard restarted during the test: {status}"
    finally:
        rel.uninstall(wait=False)
