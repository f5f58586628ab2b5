"""A watch in a real browser (Debian's Chromium driven by Playwright) through the installed chart and
`kubectl port-forward`: started from the Service page's form, the timeline updates in place at least once per
second without a reload (new seconds are appended to the strip, the columns already there stay, and the
strip keeps at most its ring of columns), and a reload after it stopped shows the same data.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from bench.engine_local import echo_backends
from bench.watch import dashboard
from scripts import demo
from tests.chart.release import Release, port_forward
from tests.e2e.conftest import Cluster, deploy_echo_app
from tests.e2e.test_browser import _shot, browser_context, page  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(900)]

# Records, with the page's clock, each time the live status line changes (a new timeline arrived), and marks
# the window so that a reload (a new window object) would be noticed.
RECORD_JS = """
() => {
  window.__watch_loaded = true;
  window.__watch_seen = [];
  const record = () => {
    const s = document.querySelector('.watch .watch-status');
    const seen = window.__watch_seen;
    if (s && (!seen.length || seen[seen.length - 1][2] !== s.dataset.elapsed)) {
      seen.push([performance.now(), Number(s.dataset.requests), s.dataset.elapsed]);
    }
  };
  new MutationObserver(record).observe(document.querySelector('.watch'), {subtree: true, childList: true});
}
"""

# The strip's columns: how many, their seconds in order, and whether the column tagged earlier is still the
# same DOM node (appended to, not redrawn).
STRIP_JS = """
() => {
  const strip = document.querySelector('.watch-strip');
  const cols = Array.from(strip.children);
  return {
    n: cols.length,
    seconds: cols.map(c => Number(c.dataset.second)),
    tagged: !!(window.__watch_tagged && window.__watch_tagged.isConnected),
  };
}
"""


def contiguous(seconds: list[int]) -> bool:
    return seconds == list(range(seconds[0], seconds[0] + len(seconds)))


@pytest.fixture(scope="module")
def site(cluster: Cluster) -> Iterator[tuple[str, str]]:
    demo.build_image()
    namespace = f"e2e-watch-browser-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", namespace)
    release = Release(
        namespace=namespace,
        kubectl=cluster.kubectl,
        helm_base=[str(cluster.bin_dir / "helm"), "--kubeconfig", str(cluster.kubeconfig)],
    )
    try:
        cluster.wait_for(
            lambda: cluster.kubectl("get", "sa", "default", "-n", namespace, check=False).returncode == 0,
            120,  # a busy node's controller-manager can take a while
            "the default ServiceAccount",
        )
        deploy_echo_app(cluster, namespace, "live", replicas=3)
        release.install()
        kubectl = [str(cluster.bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}"]
        with port_forward(kubectl, namespace, release.fullname) as url:
            yield url, namespace
    finally:
        release.uninstall(wait=False)
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def loopback() -> Iterator[str]:
    """The same app without a cluster (as bench/watch.py runs it): echo processes behind the dial seam."""
    with echo_backends() as ports, dashboard(ports) as (_, url):
        yield url


def test_timeline_updates_live_and_reload_shows_the_same(
    page: tuple[Any, Any],  # noqa: F811 (the imported fixture)
    site: tuple[str, str],
) -> None:
    url, namespace = site
    watch_live_then_reload(page, url, namespace, "live", "watch")


def test_timeline_live_on_loopback(page: tuple[Any, Any], loopback: str) -> None:  # noqa: F811
    """The browser half alone, on loopback: tells a broken page from a broken cluster connection."""
    watch_live_then_reload(page, loopback, "demo", "web", "watch-loopback")


def watch_live_then_reload(
    opened: tuple[Any, Any], url: str, namespace: str, service: str, shot: str
) -> None:
    pg, console = opened
    pg.goto(f"{url}/services/{namespace}/{service}")
    pg.wait_for_selector("#watch-form button[type=submit]")
    pg.fill("#watch-form input[name=rate]", "20")
    pg.fill("#watch-form input[name=duration_s]", "120")
    pg.click("#watch-form button[type=submit]")
    pg.wait_for_url("**/watches/*")
    pg.wait_for_selector(".watch[data-status] .watch-strip")
    pg.evaluate(RECORD_JS)
    # The strip grows by appended seconds: the column tagged now is still the same node later.
    pg.wait_for_function("() => document.querySelectorAll('.watch-strip .wsec').length >= 2", timeout=30_000)
    pg.evaluate("() => { window.__watch_tagged = document.querySelector('.watch-strip').lastElementChild; }")
    before = pg.evaluate(STRIP_JS)
    pg.wait_for_function(
        f"() => document.querySelector('.watch-strip').children.length >= {before['n'] + 3}", timeout=30_000
    )
    grown = pg.evaluate(STRIP_JS)
    assert grown["tagged"] and contiguous(grown["seconds"]), grown
    assert grown["seconds"][: before["n"]] == before["seconds"], (before, grown)
    # The ring: with room for 5 columns, the strip drops its oldest as new seconds come.
    pg.evaluate("() => { document.querySelector('.watch-strip').dataset.max = '5'; }")
    last = grown["seconds"][-1]
    pg.wait_for_function(
        f"() => Number(document.querySelector('.watch-strip').lastElementChild.dataset.second) >= {last + 3}",
        timeout=30_000,
    )
    ring = pg.evaluate(STRIP_JS)
    assert ring["n"] == 5 and contiguous(ring["seconds"]) and ring["seconds"][-1] >= last + 3, ring
    # Eight updates of the status line in all (the page's own clock), then stop with the page's button.
    pg.wait_for_function("() => window.__watch_seen.length >= 8", timeout=30_000)
    _shot(pg, f"{shot}-running")
    seen: list[list[Any]] = pg.evaluate("() => window.__watch_seen")
    assert pg.evaluate("() => window.__watch_loaded") is True  # the same window: no reload happened
    times = [t for t, _, _ in seen]
    gaps = [(b - a) / 1000 for a, b in itertools.pairwise(times)]
    assert max(gaps) <= 1.5, f"updates were not at least once per second: gaps {gaps}"
    requests = [n for _, n, _ in seen]
    assert requests == sorted(requests) and requests[-1] > requests[0], requests
    pg.click(".watch form button[type=submit]")  # Stop
    pg.wait_for_selector('.watch[data-status="stopped"]', timeout=30_000)
    stopped_text = pg.locator(".watch .watch-status").inner_text()
    bars = pg.locator(".watch-strip rect[class^=f]").count()
    assert bars > 0 and "stopped" in stopped_text
    pg.reload()
    pg.wait_for_selector('.watch[data-status="stopped"] svg')
    assert pg.locator(".watch .watch-status").inner_text() == stopped_text
    assert pg.locator(".watch-strip rect[class^=f]").count() == bars
    _shot(pg, f"{shot}-reloaded")
    assert not console.errors, console.errors
