"""The exec origin from the browser, as a user picks it: a real headless Chromium on the Service page of the
installed chart (its own RBAC: exec in the test namespace only), reached through `kubectl port-forward`.

The picker lists the running containers of the namespaces the dashboard may exec into. Picking the container
of a busybox-only pod (sh, wget, nc: no curl, no python3) and clicking Probe runs the requests from there and
shows the pods that answered; picking a pod with a shell and no client shows the message naming every tool
that was looked for. Images are written locally (tests/e2e/toolimages.py): nothing is pulled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e import toolimages
from tests.e2e.conftest import Cluster, EchoApp, start_client_pod, wait_for
from tests.e2e.dashboard import Dashboard, deployed
from tests.e2e.released import released_dashboard
from tests.e2e.test_browser import Console, _shot, browser_context, page  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(600)]

COUNT = 12
RUN_TIMEOUT_MS = 120_000
LOOKED_FOR = "no client for HTTP: looked for svcscope's echo client, curl, wget, python3, nc, bash"


@pytest.fixture
def exec_dashboard(cluster: Cluster, namespace: str) -> Iterator[Dashboard]:
    toolimages.build_and_import()
    sets = ("rbac.exec=true", f"rbac.writableNamespaces={{{namespace}}}")
    with released_dashboard(cluster, namespace, *sets) as (_, dash):
        yield dash


def _service_page_offering(pg: Any, url: str, pick: str) -> None:
    """Open the Service page until its picker offers ``pick`` (the watch brings a new pod on its own time)."""

    def offered() -> bool:
        pg.goto(url)
        pg.wait_for_selector("#probe-panel button[type=submit]")
        return bool(pg.locator(f'select[name=exec_pick] option[value="{pick}"]').count() == 1)

    wait_for(offered, 60, f"the exec picker to offer {pick}", interval=1.0)


def _probe_from(pg: Any, pick: str) -> None:
    pg.select_option("#probe-panel select[name=origin]", "exec")
    pg.select_option("#probe-panel select[name=exec_pick]", pick)
    pg.fill("#probe-panel input[name=count]", str(COUNT))
    pg.fill("#probe-panel input[name=concurrency]", "1")
    pg.click("#probe-panel button[type=submit]")


def _ended(pg: Any, shot: str) -> str:
    """The run's final status once its summary shows one (an error shown in place of a run: "error")."""
    pg.wait_for_function(
        """() => document.querySelector('#probe-run .probe-error') ||
            ['done', 'failed', 'cancelled', 'timed_out'].includes(
                document.querySelector('#probe-run .probe-summary')?.dataset.status)""",
        timeout=RUN_TIMEOUT_MS,
    )
    _shot(pg, shot)
    summary = pg.locator("#probe-run .probe-summary")
    return str(summary.get_attribute("data-status")) if summary.count() else "error"


def test_pick_a_busybox_container_and_probe_then_a_pod_without_a_client_says_what_was_looked_for(
    cluster: Cluster,
    exec_dashboard: Dashboard,
    deploy_echo: Callable[..., EchoApp],
    namespace: str,
    page: tuple[Any, Console],  # noqa: F811
) -> None:
    dash = exec_dashboard
    pg, console = page
    app = deployed(deploy_echo, dash, namespace)
    busybox = start_client_pod(cluster, namespace, "bb-only", image=toolimages.WGET_IMAGE, command=None)
    bare = start_client_pod(cluster, namespace, "shell-only", image=toolimages.SHELL_ONLY_IMAGE, command=None)
    container = cluster.get("pod", busybox, "-n", namespace)["spec"]["containers"][0]["name"]
    url = f"{dash.base_url}/services/{namespace}/{app.name}"

    pick = f"{namespace}/{busybox}/{container}"
    _service_page_offering(pg, url, pick)
    options = pg.locator("select[name=exec_pick] option").all_text_contents()
    assert f"{namespace}/{busybox} · {container}" in options, options
    assert not any("kube-system" in o for o in options), "exec is not allowed there: not offered"
    _shot(pg, "exec-picker")
    _probe_from(pg, pick)
    assert _ended(pg, "exec-busybox-done") == "done", pg.locator("#probe-run").inner_text()
    done = pg.locator("#probe-run .probe-summary")
    assert done.get_attribute("data-done") == str(COUNT)
    hits = {
        str(row.get_attribute("data-pod")): int(str(row.get_attribute("data-hits")))
        for row in pg.locator("#probe-run tr[data-pod]").all()
    }
    answering = {p: n for p, n in hits.items() if n}
    echo_pods = {p["metadata"]["name"] for p in cluster.pods(namespace, app.selector)}
    assert sum(answering.values()) == COUNT and set(answering) <= echo_pods, hits
    assert "wget" in pg.locator("#probe-run").inner_text(), "the run says which tool sent the requests"

    bare_container = cluster.get("pod", bare, "-n", namespace)["spec"]["containers"][0]["name"]
    pick = f"{namespace}/{bare}/{bare_container}"
    _service_page_offering(pg, url, pick)
    _probe_from(pg, pick)
    assert _ended(pg, "exec-no-tool") == "failed", pg.locator("#probe-run").inner_text()
    text = " ".join(pg.locator("#probe-run").inner_text().split())
    assert LOOKED_FOR in text, text
    assert not console.errors, console.errors
