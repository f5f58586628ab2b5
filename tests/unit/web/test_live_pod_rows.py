"""A running run of a Service with hundreds of endpoints: its page draws a bounded number of per-pod rows
and sums up the others in one line that links to every row; the summary is not recounted from every
request each time the page is drawn. Once the run ends, the report has a row per pod."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.domain import ObjectKey
from app.main import create_app, create_templates
from app.probe import run as run_module
from app.probe.run import Run, RunStatus
from app.probe.spec import ProbeSpec
from app.probe.stats import Outcome, RunShape, Summary, Tally, summarize
from app.probe.targets import resolve
from app.web import probes
from app.web.podrows import LIVE_ROWS, pod_rows
from app.web.render import fragment
from tests.unit.fakes import HTTP_PORT, NS, web_view
from tests.unit.kube.objects import demo_cache

PODS = 250
ROW = re.compile(r'<tr data-pod="([^"]+)" data-hits="(\d+)"')


def wide_run(count: int = 2000) -> Run:
    """A running run against a Service of PODS endpoints, with every request answered (seeded)."""
    view = web_view(1)
    pods = [(f"web-{i}", f"198.18.{1 + i // 200}.{10 + i % 200}") for i in range(PODS)]
    view.set_endpoints(ObjectKey(NS, "web"), pods, [HTTP_PORT])
    spec = ProbeSpec(namespace=NS, service="web", port="http", count=10_000, concurrency=10)
    run = Run("a" * 12, spec, resolve(view, ObjectKey(NS, "web"), spec.port, spec.protocol), None, view)
    rnd = random.Random(7)
    for seq in range(1, count + 1):
        # Pod web-0 gets no request at all: the one a user watching would want to see.
        run.add(Outcome(seq, f"web-{rnd.randrange(1, PODS)}", None, rnd.random() * 5, seq))
    return run


def drawn(run: Run, *, every_pod: bool = False) -> tuple[str, dict[str, int]]:
    html = fragment(
        create_templates(),
        "partials/_probe_run.html",
        csrf_token="t",
        **probes.run_context(run, every_pod=every_pod),
    )
    return html, {pod: int(hits) for pod, hits in ROW.findall(html)}


def test_a_running_run_of_250_pods_draws_a_bounded_table_and_says_what_it_left_out() -> None:
    run = wide_run()
    html, rows = drawn(run)
    s = run.summary()
    assert len(s.pods) == PODS
    assert len(rows) == LIVE_ROWS, len(rows)  # the old page drew a row per pod: 250
    hits = {p.pod: p.hits for p in s.pods}
    assert rows == {pod: hits[pod] for pod in rows}  # the rows drawn are right
    fewest, most = min(hits.values()), max(hits.values())
    assert rows["web-0"] == fewest == 0 and most in rows.values()
    left = [n for pod, n in hits.items() if pod not in rows]
    line = re.search(r'data-testid="pods-left-out" data-left-out="(\d+)"', html)
    assert line is not None and int(line.group(1)) == PODS - LIVE_ROWS == len(left)
    assert f"have {min(left)}\N{EN DASH}{max(left)} hits each" in html
    assert f'href="/runs/{run.id}?pods=all"' in html
    # Asked for, every row, and the live stream of that page keeps every row too.
    html, rows = drawn(run, every_pod=True)
    assert rows == hits and "pods-left-out" not in html
    assert f'sse-connect="/runs/{run.id}/stream?pods=all"' in html
    # Once the run ends, its report lists every pod.
    run.finish(RunStatus.DONE)
    html, rows = drawn(run)
    assert rows == hits and "pods-left-out" not in html


def test_pods_to_look_at_are_listed_before_the_fewest_and_most_hits() -> None:
    run = wide_run(600)
    s = run.summary()
    gone = [replace(p, current=False) for p in s.pods[5:8]]  # pods no longer endpoints
    pods = (*s.pods[:5], *gone, *s.pods[8:])
    rows = pod_rows(replace(s, pods=pods), running=True, limit=4)
    by_hits = sorted(s.pods, key=lambda p: (p.hits, p.pod))
    # The three gone pods, then one more: the fewest hits; in the table's order.
    assert [p.pod for p in rows.rows] == sorted([by_hits[0].pod, *(p.pod for p in gone)], key=pods_order(s))
    assert rows.left_out == PODS - 4
    assert pod_rows(s, running=True, limit=PODS).rows == s.pods  # few enough: all
    assert pod_rows(s, running=False, limit=4).rows == s.pods


def pods_order(s: Summary) -> Callable[[str], int]:
    index = {p.pod: i for i, p in enumerate(s.pods)}
    return index.__getitem__


def test_a_running_run_does_not_recount_every_request_for_each_summary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = wide_run(500)

    def recount(*args: object, **kw: object) -> None:
        raise AssertionError("a running run's summary went over every request again")

    monkeypatch.setattr(run_module, "summarize", recount)
    for seq in range(501, 520):
        run.add(Outcome(seq, "web-3", None, 1.0, seq))
        assert run.summary().done == seq


def test_a_tally_fed_out_of_order_summarizes_as_a_fresh_count() -> None:
    rnd = random.Random(3)
    outcomes = [
        Outcome(
            seq,
            rnd.choice(["a", "b", None]),
            rnd.choice([None, None, "timeout"]),
            rnd.random(),
            seq % 7,
            reason="r",
        )
        for seq in range(1, 400)
    ]
    outcomes += [Outcome(5, "b", None, 0.5, 1)]  # a tie on seq keeps arrival order
    rnd.shuffle(outcomes)
    shape = RunShape(400, "None", None, False, 4, "HTTP")
    tally = Tally()
    for i, o in enumerate(outcomes, start=1):
        tally.add(o)
        if i % 97 == 0:  # summaries taken along the way leave the tally's lists partly sorted
            assert tally.summary(shape, ()) == summarize(outcomes[:i], shape, ())
    assert tally.summary(shape, ()) == summarize(outcomes, shape, ())


@pytest.fixture
def client() -> Iterator[TestClient]:
    app = create_app(Settings(csrf_secret="test"), cache=demo_cache(), start_watchers=False)
    with TestClient(app, base_url="http://localhost") as c:
        yield c


def test_an_unknown_pods_value_is_a_clear_4xx(client: TestClient) -> None:
    r = client.get(f"/runs/{'a' * 12}?pods=some")
    assert r.status_code == 422 and "all" in r.text
