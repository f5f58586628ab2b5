"""The user's path, for real: chart installed with the demo workloads, `kubectl port-forward`, and
a headless Chromium (Debian's, driven by Playwright; no browser download) that opens the list, opens the
ClientIP demo Service, clicks Probe and watches the bars fill live.

Screenshots land in artifacts/browser/ (gitignored). Any console error or uncaught page error fails the test.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from scripts import demo
from tests.chart.release import Release, custom_cluster_ip, port_forward
from tests.e2e.conftest import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package `chromium` (installed by `make install`)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "browser"
PROBE_COUNT = 1200  # long enough (new connection each, concurrency 2) to be seen filling in
PROBE_CONCURRENCY = 2
PROBE_TIMEOUT_MS = 90_000

# Records every value the live summary shows, so the test can tell a live fill from a finished page.
WATCH_JS = """
() => {
  window.__svcscope_seen = [];
  const record = () => {
    const s = document.querySelector('#probe-run .probe-summary');
    const cells = document.querySelectorAll('#probe-run .strip .cell').length;
    if (s) window.__svcscope_seen.push([s.dataset.status, Number(s.dataset.done), cells]);
  };
  new MutationObserver(record).observe(document.querySelector('#probe-run'),
    {subtree: true, childList: true, attributes: true});
}
"""


@dataclass
class Console:
    errors: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def demo_release(cluster: Cluster) -> Iterator[Release]:
    """The chart with the demo workloads, in a namespace of its own, from the image of the Dockerfile."""
    demo.build_image()
    namespace = f"e2e-browser-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", namespace)
    rel = Release(
        namespace=namespace,
        kubectl=cluster.kubectl,
        helm_base=[str(cluster.bin_dir / "helm"), "--kubeconfig", str(cluster.kubeconfig)],
    )
    try:
        rel.install("demo.enabled=true", f"demo.customClusterIP={custom_cluster_ip()}")
        yield rel
    finally:
        rel.uninstall(wait=False)
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def base_url(cluster: Cluster, demo_release: Release) -> Iterator[str]:
    kubectl = [str(cluster.bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}"]
    with port_forward(kubectl, demo_release.namespace, demo_release.fullname) as url:
        yield url


@pytest.fixture(scope="module")
def browser_context() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make install` installs Debian's chromium", pytrace=False)
    from playwright.sync_api import sync_playwright

    profile = Path(tempfile.mkdtemp(prefix="svcscope-chromium-"))
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(profile),
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1400, "height": 1000},
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser_context: Any) -> Iterator[tuple[Any, Console]]:
    console = Console()
    pg = browser_context.new_page()

    def on_console(msg: Any) -> None:
        if msg.type == "error":
            console.errors.append(f"console: {msg.text} ({msg.location})")

    pg.on("console", on_console)
    pg.on("pageerror", lambda exc: console.errors.append(f"pageerror: {exc}"))
    pg.set_default_timeout(30_000)
    try:
        yield pg, console
    finally:
        pg.close()


def _shot(pg: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _open_service_from_list(pg: Any, base_url: str, namespace: str, service: str, shot: str) -> None:
    """Open the list, narrow it to the namespace with the filter control, then follow the Service's link."""
    pg.goto(f"{base_url}/")
    pg.wait_for_selector("#service-list")
    pg.select_option("select[name=namespace]", namespace)  # htmx swaps the list in place
    row = pg.locator(f"#svc-{namespace}-{service}")
    row.wait_for(state="visible")
    assert pg.locator("#service-rows tr[data-service]").count() >= 6  # the demo Services
    _shot(pg, f"{shot}-list")
    row.locator("a", has_text=service).click()
    pg.wait_for_url(f"**/services/{namespace}/{service}")
    pg.wait_for_selector("#probe-panel button[type=submit]")


def _probe_and_watch(pg: Any, shot: str) -> dict[str, int]:
    """Click Probe, watch the run fill in live, return pod -> hits of the finished run."""
    pg.fill("#probe-panel input[name=count]", str(PROBE_COUNT))
    pg.fill("#probe-panel input[name=concurrency]", str(PROBE_CONCURRENCY))
    pg.evaluate(WATCH_JS)
    pg.click("#probe-panel button[type=submit]")
    # Live: some requests answered, not all, while the run is still going.
    pg.wait_for_function(
        "n => (window.__svcscope_seen || []).some(([st, d]) => st === 'running' && d > 0 && d < n)",
        arg=PROBE_COUNT,
        timeout=PROBE_TIMEOUT_MS,
    )
    _shot(pg, f"{shot}-running")
    pg.wait_for_selector('#probe-run .probe-summary[data-status="done"]', timeout=PROBE_TIMEOUT_MS)
    _shot(pg, f"{shot}-done")
    seen: list[list[Any]] = pg.evaluate("() => window.__svcscope_seen")
    partial = {int(done) for status, done, _ in seen if status == "running" and 0 < done < PROBE_COUNT}
    assert partial, f"the summary never showed a partly done run: {seen[:20]}"
    cells = [int(c) for _, _, c in seen]
    assert any(0 < c < PROBE_COUNT for c in cells), "the per-request strip never filled in live"
    summary = pg.locator("#probe-run .probe-summary")
    assert summary.get_attribute("data-done") == str(PROBE_COUNT)
    hits: dict[str, int] = {}
    for row in pg.locator("#probe-run tr[data-pod]").all():
        hits[str(row.get_attribute("data-pod"))] = int(str(row.get_attribute("data-hits")))
    return hits


@pytest.mark.parametrize(
    ("service", "shot"),
    [("svcscope-echo-affinity", "affinity"), ("svcscope-echo", "plain")],
    ids=["clientip-affinity-one-pod", "plain-spreads-over-pods"],
)
def test_probe_fills_live_and_shows_the_routing(
    page: tuple[Any, Console], base_url: str, demo_release: Release, service: str, shot: str
) -> None:
    """ClientIP affinity: every hit on one pod (the other two listed with none). Plain: at least two pods."""
    pg, console = page
    _open_service_from_list(pg, base_url, demo_release.namespace, service, shot)
    hits = _probe_and_watch(pg, shot)
    answering = {pod: n for pod, n in hits.items() if n > 0}
    assert sum(answering.values()) == PROBE_COUNT, hits
    if shot == "affinity":
        assert len(answering) == 1, f"ClientIP affinity: expected one pod, got {hits}"
        assert len(hits) == 3, hits
    else:
        assert len(answering) >= 2, f"a plain ClusterIP Service should spread new connections: {hits}"
    assert not console.errors, console.errors


def test_no_endpoints_service_explains_itself(
    page: tuple[Any, Console], base_url: str, demo_release: Release
) -> None:
    pg, console = page
    pg.goto(f"{base_url}/services/{demo_release.namespace}/svcscope-no-endpoints")
    pg.wait_for_selector("#service-detail")
    text = pg.locator("#service-detail").inner_text()
    assert "matches no pods" in text, text[:2000]
    _shot(pg, "no-endpoints")
    assert not console.errors, console.errors
