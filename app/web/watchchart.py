"""The watch timeline as columns, one small inline SVG per second, and the live feed that draws each column
once for all viewers.

A column's scale is fixed when the watch starts (bars: the requested rate fills the height; latency: a log
scale from ``LAT_MIN_MS`` to the request timeout), so a column drawn once never needs drawing again when
later seconds come. The browser appends each new second to the strip (htmx ``beforeend``) and drops the
oldest beyond the ring; a reload draws the same columns server-side, so it works without JavaScript. A
column does change when replies started in its second come in late (at most the request timeout later):
the feed draws it again and sends it out of band.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from fastapi.sse import format_sse_event

from app.probe.watch import Event, EventKind, Second, Series
from app.probe.watchrun import Watch, WatchSpec

PALETTE = 12
COL_W = 8  # pixels per second
BARS_H = 160
ERR_Y, ERR_H = 168, 30
LAT_Y, LAT_H = 206, 70
HEIGHT = 290  # with the row of tick labels
LAT_MIN_MS = 0.1
TICK_EVERY = 10
CHART_S = 120  # seconds in a live strip (the browser's ring); a finished watch shows every kept second
LATE_MARGIN_S = 1  # beyond the request timeout, how late a reply may still change its second
BEAT_DELAY_S = 0.05  # after a whole second of the watch, before its column is drawn (its last starts)
MIN_WAIT_S = 0.2  # the shortest wait for a beat (a viewer that joins just before one waits for the next)
# What the templates draw with (one source for the column's and the axis's sizes).
GEOMETRY = {
    "col_w": COL_W,
    "bars_h": BARS_H,
    "err_y": ERR_Y,
    "err_h": ERR_H,
    "lat_y": LAT_Y,
    "lat_h": LAT_H,
    "height": HEIGHT,
    "lat_min_ms": LAT_MIN_MS,
}


@dataclass(frozen=True, slots=True)
class Bar:
    y: float
    h: float
    cls: str
    title: str


@dataclass(frozen=True, slots=True)
class Mark:
    x: float
    cls: str
    title: str


@dataclass(frozen=True, slots=True)
class Column:
    second: int
    title: str  # the second in words (the column's tooltip where no bar has one)
    bars: tuple[Bar, ...]
    error: Bar | None
    p50_y: float | None
    p95_y: float | None
    latency: str
    marks: tuple[Mark, ...]
    tick: bool


@dataclass(frozen=True, slots=True)
class Scale:
    """What a full-height bar and the top of the latency band stand for: fixed for the whole watch."""

    requests: float
    max_ms: float

    @classmethod
    def of(cls, spec: WatchSpec) -> Scale:
        return cls(float(max(1, math.ceil(spec.rate))), max(spec.timeout_s * 1000.0, LAT_MIN_MS * 10))

    def latency_y(self, ms: float) -> float:
        lo, hi = math.log(LAT_MIN_MS), math.log(self.max_ms)
        f = (math.log(max(ms, LAT_MIN_MS)) - lo) / (hi - lo)
        return LAT_Y + LAT_H - min(1.0, max(0.0, f)) * LAT_H


def colors_of(series: Series) -> dict[str, int]:
    """A colour per pod by the order pods first answered, so a pod keeps its colour as others appear."""
    return {pod: i % PALETTE for i, pod in enumerate(series.pod_order())}


def empty(second: int) -> Second:
    return Second(second, 0, 0, (), (), None, None)


def marker_class(e: Event) -> str:
    if e.kind in (EventKind.SERVICE, EventKind.GONE):
        return "mk-svc"
    if e.kind in (EventKind.READY, EventKind.ADDED):
        return "mk-up"
    return "mk-down"


def column(sec: Second, scale: Scale, colors: dict[str, int], events: Iterable[Event] = ()) -> Column:
    """One second's column: stacked hits per pod, its errors, p50/p95 and the events seen in it."""
    s = sec.second
    bars: list[Bar] = []
    y = float(BARS_H)
    parts = [(f"f{colors.get(pod, 0)}", n, f"second {s}: {pod} {n}") for pod, n in sec.hits]
    if sec.unattributed:
        parts.append(("funk", sec.unattributed, f"second {s}: unattributed {sec.unattributed}"))
    for cls, n, title in parts:
        h = min(n / scale.requests * BARS_H, y)  # a second above the rate is drawn full height
        y -= h
        bars.append(Bar(y, h, cls, title))
    error = None
    if sec.errors:
        h = min(1.0, sec.error_count / scale.requests) * ERR_H
        text = ", ".join(f"{k} {n}" for k, n in sec.errors)
        error = Bar(ERR_Y + ERR_H - max(h, 1.0), max(h, 1.0), "ferr", f"second {s}: {text}")
    p50 = None if sec.p50_ms is None else scale.latency_y(sec.p50_ms)
    p95 = None if sec.p95_ms is None else scale.latency_y(sec.p95_ms)
    latency = (
        f"second {s}: latency p50 {sec.p50_ms:.1f} ms, p95 {sec.p95_ms:.1f} ms"
        if sec.p50_ms is not None and sec.p95_ms is not None
        else ""
    )
    marks = tuple(
        Mark(round((e.at_s - s) * COL_W, 1), marker_class(e), f"{e.at_s:.1f} s: {e.text}") for e in events
    )
    title = f"second {s}: {sec.requests} requests" + (f", {sec.error_count} errors" if sec.errors else "")
    return Column(s, title, tuple(bars), error, p50, p95, latency, marks, s % TICK_EVERY == 0)


def events_by_second(events: Iterable[Event]) -> dict[int, list[Event]]:
    out: dict[int, list[Event]] = {}
    for e in events:
        out.setdefault(max(0, math.floor(e.at_s)), []).append(e)
    return out


def columns(series: Series, events: Sequence[Event], spec: WatchSpec, first: int, last: int) -> list[Column]:
    """The columns of seconds ``first`` to ``last`` (quiet seconds as empty columns)."""
    if last < first:
        return []
    scale = Scale.of(spec)
    colors = colors_of(series)
    have = {s.second: s for s in series.seconds(after=first - 1) if s.second <= last}
    marks = events_by_second(events)
    return [column(have.get(s) or empty(s), scale, colors, marks.get(s, ())) for s in range(first, last + 1)]


def complete_upto(w: Watch) -> int:
    """The last second of ``w`` that is over (its requests have all started): -1 before the first."""
    if w.finished:
        return math.ceil(w.elapsed_s) - 1
    return math.floor(w.elapsed_s) - 1


# -- the live feed --------------------------------------------------------------------------------

RenderColumn = Callable[[str, Column], str]  # (watch id, column) -> its HTML
RenderPanels = Callable[[Watch], str]  # the status line and panels, out of band


def oob(html: str) -> str:
    """A column's HTML that replaces the column of the same id wherever the viewer has it."""
    return html.replace("<svg ", '<svg hx-swap-oob="true" ', 1)


def sse_event(event: str, data: str) -> bytes:
    """One server-sent event on the wire: its type, then each line of ``data`` as a ``data:`` line."""
    return format_sse_event(data_str=data, event=event)


class Feed:
    """One watch's live timeline for all its viewers: each column, and the status and panels once per
    second, are drawn once by whichever viewer asks first; a viewer gets the pieces it lacks as strings."""

    def __init__(self, watch: Watch, render_column: RenderColumn, render_panels: RenderPanels) -> None:
        # Weakly: the feeds are kept by watch in a WeakKeyDictionary, whose values must not hold their keys,
        # or no watch with a feed is ever freed (nor its ring of per-second detail).
        self._watch = weakref.ref(watch)
        self._render_column = render_column
        self._render_panels = render_panels
        self._scale = Scale.of(watch.spec)
        # second -> (its data, how many events it shows, version of the drawing, HTML), oldest first
        self._columns: OrderedDict[int, tuple[Second, int, int, str]] = OrderedDict()
        self._version = 0
        self._upto = -1  # columns drawn for the seconds up to this one
        self._tick: tuple[str, int] | None = None  # (status, second) the feed was last brought up to date in
        self._panels = ""
        self._final: str | None = None
        self.renders = 0  # columns and panels drawn (for tests and the bench)
        # (have, since) -> the viewer's SSE event as sent, for the current second: viewers in step (all
        # of them, once each has caught up) share one encoding instead of one each.
        self._events: dict[tuple[int, int], tuple[bytes, int, int]] = {}
        self.encodes = 0  # SSE events encoded (for tests and the bench)
        # The viewers' beat: one timer for all of them, each waiting on its own future (an Event's), so a
        # viewer that leaves cancels only its own wait. A timeout per viewer per second cost a timer and a
        # raised exception each.
        self._beat = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self.beats = 0  # beat timers set (for tests and the bench)
        watch.when_finished(self._end)

    @property
    def watch(self) -> Watch:
        w = self._watch()
        if w is None:  # a feed is only used by someone who holds its watch
            raise RuntimeError("the watch of this feed is gone")
        return w

    @property
    def version(self) -> int:
        return self._version

    @property
    def late_s(self) -> int:
        return math.ceil(self.watch.spec.timeout_s) + LATE_MARGIN_S

    def update(self) -> None:
        """Bring the feed up to the watch's current second (nothing to do if already there)."""
        w = self.watch
        tick = (w.status.value, math.floor(w.elapsed_s))
        if tick == self._tick:
            return
        self._tick = tick
        upto = complete_upto(w)
        # New seconds (at most a strip's worth), and the recent ones that late replies may still change.
        start = max(0, upto - CHART_S + 1, min(self._upto + 1, upto - self.late_s))
        have = {s.second: s for s in w.series.seconds(after=start - 1)}
        marks = events_by_second(e for e in w.events if e.at_s >= start)
        colors = colors_of(w.series)
        for s in range(start, upto + 1):
            data = have.get(s) or empty(s)
            events = marks.get(s, [])
            known = self._columns.get(s)
            if known is not None and known[0] == data and known[1] == len(events):
                continue
            self._version += 1
            html = self._render_column(w.id, column(data, self._scale, colors, events))
            self.renders += 1
            self._columns[s] = (data, len(events), self._version, html)
        self._upto = max(self._upto, upto)
        while self._columns and next(iter(self._columns)) <= self._upto - CHART_S:
            self._columns.popitem(last=False)
        self._panels = self._render_panels(w)
        self.renders += 1
        self._events.clear()

    def message(self, have: int, since: int) -> tuple[str, int, int]:
        """What a viewer showing the columns up to ``have``, drawn as of version ``since``, needs: the
        newer columns (appended), its recent columns drawn again since (out of band), status and panels.
        Returns (HTML, the viewer's new ``have``, its new ``since``)."""
        parts: list[str] = []
        recent = have - self.late_s
        for s, (_, _, version, html) in self._columns.items():
            if s > have:
                parts.append(html)
            elif version > since and s >= recent:
                parts.append(oob(html))
        parts.append(self._panels)
        return "".join(parts), max(have, self._upto), self._version

    def event(self, have: int, since: int) -> tuple[bytes, int, int]:
        """``message`` as a ``timeline`` server-sent event, encoded once per distinct viewer state."""
        known = self._events.get((have, since))
        if known is None:
            html, new_have, new_since = self.message(have, since)
            known = self._events[(have, since)] = (sse_event("timeline", html), new_have, new_since)
            self.encodes += 1
        return known

    async def beat(self) -> None:
        """Wait until just after the watch's next whole second, when that second's column can be drawn,
        or until the watch ends."""
        w = self.watch
        if w.finished:
            return
        if self._timer is None:
            elapsed = w.elapsed_s
            wait = max(MIN_WAIT_S, math.floor(elapsed) + 1 + BEAT_DELAY_S - elapsed)
            self._timer = asyncio.get_running_loop().call_later(wait, self._ring)
            self.beats += 1
        await self._beat.wait()

    def _ring(self) -> None:
        self._timer = None
        self._beat.set()  # wakes every viewer waiting now
        self._beat.clear()  # and the next beat is a new one

    def _end(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._beat.set()  # left set: a finished watch has no more beats

    def final(self, render: Callable[[], str]) -> str:
        """The finished watch's whole block, drawn once for all its viewers."""
        if self._final is None:
            self._final = render()
            self.renders += 1
        return self._final


_feeds: weakref.WeakKeyDictionary[Watch, Feed] = weakref.WeakKeyDictionary()


def feed_of(w: Watch, render_column: RenderColumn, render_panels: RenderPanels) -> Feed:
    """The watch's one feed (weakly kept: a watch the manager forgot takes its feed with it)."""
    feed = _feeds.get(w)
    if feed is None:
        feed = _feeds[w] = Feed(w, render_column, render_panels)
    return feed
