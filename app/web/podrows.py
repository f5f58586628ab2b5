"""Which rows a run's per-pod table shows while the run goes.

The live report is drawn again several times a second (the stream, a reload, the htmx fragment). For a
Service with hundreds of endpoints, drawing a row per pod each time is most of what the page costs, and a
table that long, redrawn that often, is not read row by row anyway. So while a run goes, a table of more
than LIVE_ROWS pods shows the rows worth a look (a pod gone from the endpoints, a pod that answered but
should not, the fewest and the most hits) and one line for the others: how many, their range of hits,
and a link to the page with every row. Nothing is hidden without saying so, and once the run ends its
report lists every pod again. Pure: no web imports.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.probe.stats import PodStats, Summary

LIVE_ROWS = 24  # rows of a running run's table before the others are summed up in one line
ALL_PODS = "all"  # the query value (?pods=all) that asks for every row while the run goes


@dataclass(frozen=True, slots=True)
class PodRows:
    rows: tuple[PodStats, ...]  # the rows drawn, in the table's order
    left_out: int = 0  # pods counted in the line below the table instead
    least: int = 0  # fewest hits among those
    most: int = 0  # most hits among those


def pod_rows(s: Summary, *, running: bool, every: bool = False, limit: int = LIVE_ROWS) -> PodRows:
    """The rows to draw: all of them once the run ended, when asked for (``every``) or when they are
    few; otherwise at most ``limit``: first those that need a look, then the fewest and the most hits."""
    pods = s.pods
    if not running or every or len(pods) <= limit:
        return PodRows(pods)
    routing = s.routing
    expected = set(routing.expected) if routing is not None and routing.fate == "routed" else None
    look = [p for p in pods if not p.current or (expected is not None and p.hits and p.pod not in expected)]
    by_hits = sorted(pods, key=lambda p: (p.hits, p.pod))
    chosen: dict[str, None] = {}
    for p in look[:limit]:
        chosen[p.pod] = None
    extremes = [x for pair in zip(by_hits, reversed(by_hits), strict=True) for x in pair]
    for p in extremes:
        if len(chosen) >= limit:
            break
        chosen[p.pod] = None
    rows = tuple(p for p in pods if p.pod in chosen)
    rest = [p.hits for p in pods if p.pod not in chosen]
    return PodRows(rows, len(rest), min(rest), max(rest))
