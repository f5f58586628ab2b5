"""The watch timeline's columns and the live feed that draws each one once for all viewers."""

from __future__ import annotations

import asyncio
import gc
import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from fastapi.templating import Jinja2Templates

from app.domain import ObjectKey
from app.main import create_templates
from app.probe.stats import Outcome
from app.probe.targets import ProbeProtocol, resolve
from app.probe.watch import Event, EventKind, Second, Series
from app.probe.watchrun import Watch, WatchSpec, WatchStatus
from app.web.watchchart import (
    BARS_H,
    CHART_S,
    ERR_H,
    ERR_Y,
    GEOMETRY,
    LAT_H,
    LAT_Y,
    Column,
    Feed,
    Scale,
    column,
    feed_of,
    oob,
)
from tests.unit.fakes import web_view

SPEC = WatchSpec("demo", "web", "http", rate=10, timeout_s=1.0)


def render_column(templates: Jinja2Templates, watch_id: str, c: Column) -> str:
    return templates.get_template("partials/_watch_second.html").render(wid=watch_id, c=c, g=GEOMETRY)


@pytest.fixture(scope="module")
def templates() -> Jinja2Templates:
    return create_templates()


def test_bars_stack_on_a_scale_fixed_by_the_rate() -> None:
    sec = Second(7, 10, 1, (("web-0", 6), ("web-1", 3)), (), 1.0, 4.0)
    c = column(sec, Scale.of(SPEC), {"web-0": 0, "web-1": 1})
    heights = [b.h for b in c.bars]
    assert heights == pytest.approx([0.6 * BARS_H, 0.3 * BARS_H, 0.1 * BARS_H])
    assert c.bars[0].y == pytest.approx(0.4 * BARS_H) and c.bars[-1].y == pytest.approx(0.0)
    assert [b.cls for b in c.bars] == ["f0", "f1", "funk"]
    assert c.bars[0].title == "second 7: web-0 6" and c.error is None and not c.tick


def test_a_second_above_the_rate_is_drawn_full_height_not_beyond() -> None:
    c = column(Second(10, 30, 0, (("a", 20), ("b", 10)), (), None, None), Scale.of(SPEC), {})
    assert sum(b.h for b in c.bars) == pytest.approx(BARS_H) and min(b.y for b in c.bars) >= 0
    assert c.tick and c.p50_y is None and c.latency == ""


def test_errors_band_latency_on_a_log_scale_and_markers_where_they_happened() -> None:
    scale = Scale.of(SPEC)  # 0.1 ms at the bottom of the band, the 1 s timeout at the top
    sec = Second(3, 10, 0, (("a", 5),), (("refused", 2), ("timeout", 3)), 1.0, 1000.0)
    events = [Event(3.5, EventKind.READY, "endpoint a (198.18.0.10) is Ready", pod="a")]
    c = column(sec, scale, {"a": 0}, events)
    assert c.error is not None and c.error.h == pytest.approx(0.5 * ERR_H)
    assert (
        c.error.y + c.error.h == pytest.approx(ERR_Y + ERR_H)
        and c.error.title == "second 3: refused 2, timeout 3"
    )
    assert c.p95_y == pytest.approx(LAT_Y) and c.p50_y == pytest.approx(LAT_Y + LAT_H * 0.75)
    (mark,) = c.marks
    assert mark.x == pytest.approx(4.0) and mark.cls == "mk-up" and mark.title.startswith("3.5 s: endpoint a")


def test_a_column_renders_as_one_small_svg_with_escaped_text(templates: Jinja2Templates) -> None:
    sec = Second(4, 2, 0, (("<script>x</script>", 2),), (), 1.0, 2.0)
    events = [Event(4.2, EventKind.SERVICE, 'Service selector: app=a → app="<b>"', field="selector")]
    html = render_column(templates, "w1", column(sec, Scale.of(SPEC), {}, events))
    assert html.startswith('<svg class="wsec" id="ws-w1-4" data-second="4"') and html.count("<svg") == 1
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;" in html
    assert len(html) < 2000  # what a viewer gets per second, instead of the whole chart
    assert oob(html).startswith('<svg hx-swap-oob="true" class="wsec" id="ws-w1-4"')


@dataclass
class FakeWatch:
    """What the feed reads of a watch."""

    id: str = "w1"
    spec: WatchSpec = SPEC
    status: WatchStatus = WatchStatus.RUNNING
    elapsed_s: float = 0.0
    finished: bool = False
    series: Series = field(default_factory=lambda: Series(600))
    events: list[Event] = field(default_factory=list)
    on_finish: list[Callable[[], None]] = field(default_factory=list)

    def when_finished(self, callback: Callable[[], None]) -> None:
        self.on_finish.append(callback)

    def finish(self) -> None:
        self.finished, self.status = True, WatchStatus.STOPPED
        for callback in self.on_finish:
            callback()


def outcome(seq: int, at_s: float, pod: str | None = "web-0", error: str | None = None) -> Outcome:
    return Outcome(seq, pod, error, 1.0 if error is None else None, at_ms=at_s * 1000)


def feed_for(templates: Jinja2Templates, w: FakeWatch) -> tuple[Feed, list[str]]:
    panels: list[str] = []

    def render_panels(watch: Any) -> str:
        panels.append(f"status at {watch.elapsed_s}")
        return f'<p id="watch-status-w1" hx-swap-oob="true">{watch.elapsed_s}</p>'

    return Feed(cast(Watch, w), lambda wid, c: render_column(templates, wid, c), render_panels), panels


def seconds_in(html: str) -> list[tuple[bool, int]]:
    """(sent out of band, second) of each column in a message, in order."""
    return [
        (bool(m[1]), int(m[2]))
        for m in re.finditer(r'<svg (hx-swap-oob="true" )?class="wsec" id="ws-w1-(\d+)"', html)
    ]


def test_each_second_is_drawn_once_however_many_viewers(templates: Jinja2Templates) -> None:
    w = FakeWatch()
    for i in range(30):
        w.series.add(outcome(i, i / 10))  # seconds 0..2
    w.elapsed_s = 3.05
    feed, panels = feed_for(templates, w)
    messages = []
    for _ in range(20):  # 20 viewers in the same second
        feed.update()
        messages.append(feed.message(-1, -1))
    assert feed.renders == 3 + 1 and len(panels) == 1  # three columns and one status, not twenty
    html, have, since = messages[0]
    assert all(m == messages[0] for m in messages)
    assert seconds_in(html) == [(False, 0), (False, 1), (False, 2)] and have == 2 and "3.05</p>" in html
    # The next second: only the new column (appended) and the status go out.
    w.series.add(outcome(31, 3.5))
    w.elapsed_s = 4.05
    feed.update()
    html, have, since = feed.message(have, since)
    assert seconds_in(html) == [(False, 3)] and have == 3 and feed.renders == 4 + 2


def test_viewers_in_step_share_one_encoded_event_each_second(templates: Jinja2Templates) -> None:
    w = FakeWatch()
    for i in range(30):
        w.series.add(outcome(i, i / 10))
    w.elapsed_s = 3.05
    feed, _ = feed_for(templates, w)
    feed.update()
    first = feed.event(-1, -1)  # a viewer that just connected
    events = [feed.event(first[1], first[2]) for _ in range(20)]  # 20 viewers already in step
    assert feed.encodes == 1 + 1 and all(e is events[0] for e in events)
    data, have, since = first
    html, *_ = feed.message(-1, -1)
    lines = "".join(f"data: {line}\n" for line in html.split("\n"))
    assert data == f"event: timeline\n{lines}\n".encode()
    assert (have, since) == feed.message(-1, -1)[1:]
    # The next second: encoded again (once for all), not served from the last second's.
    w.series.add(outcome(31, 3.5))
    w.elapsed_s = 4.05
    feed.update()
    later = [feed.event(have, since) for _ in range(20)]
    assert feed.encodes == 3 and later[0][0] != data and b"data: " in later[0][0]


def test_a_late_reply_redraws_its_second_out_of_band(templates: Jinja2Templates) -> None:
    w = FakeWatch(elapsed_s=2.05)
    w.series.add(outcome(1, 0.5))
    w.series.add(outcome(2, 1.5))
    feed, _ = feed_for(templates, w)
    feed.update()
    _, have, since = feed.message(-1, -1)
    # A request started in second 1 times out after its column was drawn.
    w.series.add(outcome(3, 1.9, pod=None, error="timeout"))
    w.elapsed_s = 3.05
    feed.update()
    html, have, since = feed.message(have, since)
    assert seconds_in(html) == [(True, 1), (False, 2)] and "timeout 1" in html
    # A viewer that already got the redrawn second does not get it again.
    w.elapsed_s = 4.05
    feed.update()
    html, _, _ = feed.message(have, since)
    assert seconds_in(html) == [(False, 3)]


def test_a_quiet_second_is_an_empty_column_and_the_feed_keeps_a_strip_at_most(
    templates: Jinja2Templates,
) -> None:
    w = FakeWatch(elapsed_s=CHART_S + 50.5)
    w.series.add(outcome(1, CHART_S + 10.2))
    feed, _ = feed_for(templates, w)
    feed.update()
    html, have, _ = feed.message(-1, -1)
    got = seconds_in(html)
    assert len(got) == CHART_S and got[0] == (False, 50) and have == CHART_S + 49
    assert html.count("<title>second 51: 0 requests</title>") == 1


async def test_viewers_wait_for_the_next_second_on_one_timer_and_the_end_wakes_them(
    templates: Jinja2Templates,
) -> None:
    w = FakeWatch(elapsed_s=3.9)
    feed, _ = feed_for(templates, w)
    waiting = [asyncio.create_task(feed.beat()) for _ in range(20)]
    await asyncio.sleep(0)
    leaving = waiting.pop()
    leaving.cancel()  # a viewer that goes away: only its own wait ends
    await asyncio.wait_for(asyncio.gather(*waiting), 5)  # the beat just after second 4 (0.2 s from now)
    assert leaving.cancelled() and feed.beats == 1  # one timer for twenty viewers
    # Waiting for the next second (1.05 s away): the watch's end wakes every viewer without it.
    w.elapsed_s = 4.0
    waiting = [asyncio.create_task(feed.beat()) for _ in range(5)]
    await asyncio.sleep(0)
    assert feed.beats == 2 and not any(t.done() for t in waiting)
    w.finish()
    for _ in range(3):  # a few turns of the loop, far less than the beat's 1.05 s
        await asyncio.sleep(0)
    assert all(t.done() and t.exception() is None for t in waiting)
    await feed.beat()  # a finished watch has no more beats to wait for
    assert feed.beats == 2


def test_a_watch_nobody_holds_is_freed_with_its_feed(templates: Jinja2Templates) -> None:
    view = web_view(3)
    target = resolve(view, ObjectKey("demo", "web"), "http", ProbeProtocol.HTTP)
    w = Watch(SPEC, target, None, view, ring_s=60)
    feed = feed_of(w, lambda wid, c: render_column(templates, wid, c), lambda _: "")
    assert feed_of(w, lambda wid, c: "", lambda _: "") is feed  # one feed per watch
    gone = weakref.ref(w)
    del w, feed
    gc.collect()
    assert gone() is None  # the manager forgot it: its feed does not keep it (nor its ring)
