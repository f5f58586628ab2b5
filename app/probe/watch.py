"""Watch mode, the pure part: a continuous probe's outcomes per second, the cluster's changes as events on
the same time axis, and the numbers derived from both (Ready → first hit, terminating → last hit, errors
while something changed, time until traffic follows a new affinity rule, ClientIP re-picks).

Nothing here does I/O or reads a clock: times are seconds since the watch began, given by the caller, so
tests replay any story without waiting. Memory is bounded: a ring of the last ``ring_s`` seconds, the
events up to ``max_events``, per-pod facts up to ``max_pods``.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from app.domain import Service
from app.probe.stats import Outcome, quantile
from app.probe.targets import Backend

CHANGE_WINDOW_S = 10.0  # after a change, how long its errors count as "during the change"
MAX_EVENTS = 500
MAX_PODS = 256
MAX_REPICKS = 100
LATENCY_SAMPLES = 400  # per second, enough for p95 at 200 req/s; beyond, every other reply is kept


# -- per second --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Second:
    """One second of a watch or a run (by request start): what a timeline shows and the run store keeps,
    without the individual requests."""

    second: int  # whole seconds since the first request
    requests: int
    unattributed: int
    hits: tuple[tuple[str, int], ...]  # (pod, replies), sorted by pod
    errors: tuple[tuple[str, int], ...]  # (kind, count), sorted by kind
    p50_ms: float | None  # latency of the replies started in this second (from at most LATENCY_SAMPLES)
    p95_ms: float | None

    @property
    def error_count(self) -> int:
        return sum(n for _, n in self.errors)


@dataclass(slots=True)
class SecondBucket:
    """One second being filled: the counts so far and a bounded latency sample. ``close`` gives its
    ``Second`` (kept until the next ``add``, so reading an unchanged second again costs nothing)."""

    requests: int = 0
    unattributed: int = 0
    hits: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    # Unboxed doubles: 8 bytes a value instead of a 32-byte float object and pointer, for the ring's
    # up to LATENCY_SAMPLES values in each of its seconds.
    latencies: array[float] = field(default_factory=lambda: array("d"))
    _closed: Second | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def of(cls, second: Second) -> SecondBucket:
        """A second that is already closed (read back from the store): its counts, no latency sample."""
        bucket = cls(
            second.requests, second.unattributed, Counter(dict(second.hits)), Counter(dict(second.errors))
        )
        bucket._closed = second
        return bucket

    def add(self, o: Outcome) -> None:
        self._closed = None
        self.requests += 1
        if o.error is not None:
            self.errors[o.error] += 1
            return
        # Latency of replies only, as in the run summary (a failed request's time is its timeout).
        if o.latency_ms is not None:
            if len(self.latencies) < LATENCY_SAMPLES:
                self.latencies.append(o.latency_ms)
            else:  # a busy second: overwrite in turn, so the sample spans the whole second
                self.latencies[self.requests % LATENCY_SAMPLES] = o.latency_ms
        if o.pod is None:
            self.unattributed += 1
        else:
            self.hits[o.pod] += 1

    def close(self, second: int) -> Second:
        closed = self._closed
        if closed is None or closed.second != second:
            lat = sorted(self.latencies)
            closed = self._closed = Second(
                second=second,
                requests=self.requests,
                unattributed=self.unattributed,
                hits=tuple(sorted(self.hits.items())),
                errors=tuple(sorted(self.errors.items())),
                p50_ms=quantile(lat, 0.5),
                p95_ms=quantile(lat, 0.95),
            )
        return closed


@dataclass(frozen=True, slots=True)
class Distribution:
    """Hits per pod over some span, and what failed."""

    requests: int
    hits: tuple[tuple[str, int], ...]  # most hits first
    errors: tuple[tuple[str, int], ...]
    unattributed: int

    @property
    def replies(self) -> int:
        return sum(n for _, n in self.hits) + self.unattributed


@dataclass(frozen=True, slots=True)
class Repick:
    """Under ClientIP, the answering pod changed: expected only after an idle gap longer than the timeout."""

    at_s: float
    before: str
    after: str
    gap_s: float  # time since the previous reply
    expected: bool  # the gap exceeded the affinity timeout


class Series:
    """Outcomes of a watch folded per second, plus whole-run totals and per-pod first/last hit times."""

    def __init__(self, ring_s: int = 600, *, max_pods: int = MAX_PODS) -> None:
        self.ring_s = ring_s
        self._max_pods = max_pods
        self._ring: deque[tuple[int, SecondBucket]] = deque()
        self.requests = 0
        self.unattributed = 0
        self.hits: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.first_hit: dict[str, float] = {}  # pod -> request start (s) of its first reply
        self.last_hit: dict[str, float] = {}
        self.repicks: deque[Repick] = deque(maxlen=MAX_REPICKS)
        self.repicks_seen = 0  # re-picks so far, the dropped ones included (re-pick i is the i-th, from 0)
        self._last_reply: tuple[str, float] | None = None  # (pod, at) of the latest-starting reply

    @classmethod
    def restored(
        cls,
        seconds: Iterable[Second],
        *,
        hits: Iterable[tuple[str, float, float]] = (),
        repicks: Iterable[Repick] = (),
    ) -> Series:
        """A watch's series read back from its stored seconds (all of them in the ring): the totals are
        exact; first and last hits are exact where ``hits`` (pod, first, last) has them, else known to the
        second; ``repicks`` are the stored ClientIP re-picks."""
        kept = sorted(seconds, key=lambda s: s.second)
        series = cls(max(1, len(kept)))
        for sec in kept:
            series.requests += sec.requests
            series.unattributed += sec.unattributed
            series.hits.update(dict(sec.hits))
            series.errors.update(dict(sec.errors))
            for pod, _ in sec.hits:
                if pod in series.first_hit or len(series.first_hit) < series._max_pods:
                    series.first_hit.setdefault(pod, float(sec.second))
                    series.last_hit[pod] = float(sec.second)
            series._ring.append((sec.second, SecondBucket.of(sec)))
        for pod, first, last in hits:
            if pod in series.first_hit:
                series.first_hit[pod], series.last_hit[pod] = first, last
        series.repicks.extend(repicks)
        series.repicks_seen = len(series.repicks)
        return series

    def repicks_since(self, count: int) -> list[tuple[int, Repick]]:
        """The kept re-picks numbered ``count`` or later, with their numbers."""
        first = self.repicks_seen - len(self.repicks)
        return [(first + i, r) for i, r in enumerate(self.repicks) if first + i >= count]

    def pod_order(self) -> list[str]:
        """Pods in the order they first answered (to the second, then by name): a pod keeps its place, and
        so its colour, as others appear later."""
        first = self.first_hit
        known = sorted(first, key=lambda p: (math.floor(first[p]), p))
        return known + sorted(p for p in self.hits if p not in first)

    def add(self, o: Outcome, *, affinity: str = "None", timeout_s: int | None = None) -> None:
        at = o.at_ms / 1000.0
        self.requests += 1
        if o.error is not None:
            self.errors[o.error] += 1
        elif o.pod is None:
            self.unattributed += 1
        else:
            self.hits[o.pod] += 1
            if o.pod in self.first_hit or len(self.first_hit) < self._max_pods:
                self.first_hit[o.pod] = min(self.first_hit.get(o.pod, at), at)
                self.last_hit[o.pod] = max(self.last_hit.get(o.pod, at), at)
            self._note_pick(o.pod, at, affinity, timeout_s)
        bucket = self._bucket(max(0, math.floor(at)))
        if bucket is not None:  # None: older than the ring, in the totals only
            bucket.add(o)

    def _note_pick(self, pod: str, at: float, affinity: str, timeout_s: int | None) -> None:
        last = self._last_reply
        if last is not None and at < last[1]:
            return  # an earlier request that finished late: the order of picks is by start
        self._last_reply = (pod, at)
        if last is None or affinity != "ClientIP" or last[0] == pod:
            return
        gap = at - last[1]
        timeout = timeout_s if timeout_s is not None else 10800
        self.repicks.append(Repick(round(at, 3), last[0], pod, round(gap, 3), gap > timeout))
        self.repicks_seen += 1

    def _bucket(self, second: int) -> SecondBucket | None:
        ring = self._ring
        if ring and second <= ring[-1][0]:
            for s, b in reversed(ring):  # usually the last or the one before
                if s == second:
                    return b
                if s < second:
                    break
            if second < ring[0][0]:
                return None
            # A second with no request so far in the middle of the ring (a pause): insert in order.
            items = list(ring)
            b = SecondBucket()
            items.append((second, b))
            items.sort(key=lambda x: x[0])
            ring.clear()
            ring.extend(items)
            return b
        b = SecondBucket()
        ring.append((second, b))
        while ring and ring[0][0] <= second - self.ring_s:
            ring.popleft()
        return b

    def seconds(self, after: int = -1) -> list[Second]:
        """The kept seconds after ``after`` (all with -1), oldest first."""
        # From the newest end: the callers each second want the last few of up to ring_s seconds.
        out: list[Second] = []
        for s, b in reversed(self._ring):
            if s <= after:
                break
            out.append(b.close(s))
        out.reverse()
        return out

    def window(self, now_s: float, span_s: float) -> Distribution:
        """Hits per pod of the requests started in the last ``span_s`` seconds before ``now_s``."""
        lo = now_s - span_s
        hits: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        requests = unattributed = 0
        for s, b in reversed(self._ring):  # the ring is in order: stop at the window's start
            if s + 1 <= lo:
                break
            if s >= now_s:
                continue
            requests += b.requests
            unattributed += b.unattributed
            hits.update(b.hits)
            errors.update(b.errors)
        return _distribution(requests, hits, errors, unattributed)

    def total(self) -> Distribution:
        return _distribution(self.requests, self.hits, self.errors, self.unattributed)


def _distribution(requests: int, hits: Counter[str], errors: Counter[str], unattributed: int) -> Distribution:
    return Distribution(
        requests=requests,
        hits=tuple(sorted(hits.items(), key=lambda kv: (-kv[1], kv[0]))),
        errors=tuple(sorted(errors.items())),
        unattributed=unattributed,
    )


# -- events: diffs of successive snapshots of the Service and its endpoints ---------------------------


class EventKind:
    ADDED = "added"
    READY = "ready"
    NOT_READY = "not_ready"
    TERMINATING = "terminating"
    REMOVED = "removed"
    SERVICE = "service"  # a spec field changed
    GONE = "service_gone"

    LIFECYCLE = frozenset({ADDED, READY, NOT_READY, TERMINATING, REMOVED})


@dataclass(frozen=True, slots=True)
class Event:
    at_s: float  # seconds since the watch began (when the change was seen)
    kind: str
    text: str  # what changed, in words (shown on hover; plain text, escaped by the template)
    pod: str | None = None  # the endpoint's pod (or its IP when no watched pod backs it)
    field: str | None = None  # for SERVICE: which spec field
    before: str | None = None
    after: str | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a watch compares over time: the Service's routing-relevant spec and its endpoints."""

    spec: tuple[tuple[str, str], ...]  # (field, value) of ``SPEC_FIELDS``
    endpoints: tuple[Backend, ...]

    @property
    def affinity(self) -> str:
        return dict(self.spec).get("sessionAffinity", "None")


SPEC_FIELDS = (
    "sessionAffinity",
    "sessionAffinityTimeoutSeconds",
    "internalTrafficPolicy",
    "trafficDistribution",
    "ports",
    "selector",
)


def snapshot(service: Service | None, endpoints: Sequence[Backend]) -> Snapshot:
    if service is None:
        return Snapshot((), tuple(endpoints))
    ports = ", ".join(p.label for p in service.ports)
    selector = (
        "(none)"
        if service.selector is None
        else ", ".join(f"{k}={v}" for k, v in sorted(service.selector.items())) or "{}"
    )
    timeout = "" if service.affinity_timeout_s is None else str(service.affinity_timeout_s)
    values = (
        service.session_affinity,
        timeout,
        service.internal_traffic_policy or "",
        service.traffic_distribution or "",
        ports,
        selector,
    )
    return Snapshot(tuple(zip(SPEC_FIELDS, values, strict=True)), tuple(endpoints))


def _who(b: Backend) -> str:
    return b.pod or b.ip


def diff(old: Snapshot | None, new: Snapshot, at_s: float) -> list[Event]:
    """The changes from ``old`` to ``new`` (the first snapshot: none; the watch starts from it)."""
    if old is None:
        return []
    events: list[Event] = []
    if old.spec and not new.spec:
        return [Event(at_s, EventKind.GONE, "the Service was deleted")]
    before, after = dict(old.spec), dict(new.spec)
    for name in SPEC_FIELDS:
        was_value, now_value = before.get(name, ""), after.get(name, "")
        if was_value != now_value:
            events.append(
                Event(
                    at_s,
                    EventKind.SERVICE,
                    f"Service {name}: {was_value or '(unset)'} → {now_value or '(unset)'}",
                    field=name,
                    before=was_value,
                    after=now_value,
                )
            )
    was = {_who(b): b for b in old.endpoints}
    now = {_who(b): b for b in new.endpoints}
    for who, b in now.items():
        prev = was.get(who)
        where = f"{who} ({b.ip})" if b.pod else who
        if prev is None:
            state = "ready" if b.ready else ("terminating" if b.terminating else "not ready")
            events.append(Event(at_s, EventKind.ADDED, f"endpoint {where} added ({state})", pod=who))
            if b.ready:
                events.append(Event(at_s, EventKind.READY, f"endpoint {where} is Ready", pod=who))
            continue
        if b.terminating and not prev.terminating:
            events.append(Event(at_s, EventKind.TERMINATING, f"endpoint {where} began terminating", pod=who))
        if b.ready and not prev.ready:
            events.append(Event(at_s, EventKind.READY, f"endpoint {where} became Ready", pod=who))
        elif prev.ready and not b.ready and not b.terminating:
            events.append(Event(at_s, EventKind.NOT_READY, f"endpoint {where} is no longer Ready", pod=who))
    for who, b in was.items():
        if who not in now:
            where = f"{who} ({b.ip})" if b.pod else who
            events.append(Event(at_s, EventKind.REMOVED, f"endpoint {where} removed", pod=who))
    return events


# -- derived measurements ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lag:
    pod: str
    event_s: float
    hit_s: float | None  # first (or last) hit; None: none yet

    @property
    def lag_s(self) -> float | None:
        return None if self.hit_s is None else round(self.hit_s - self.event_s, 3)


@dataclass(frozen=True, slots=True)
class Convergence:
    """After an affinity change: when traffic first followed the new rule for good."""

    at_s: float
    before: str
    after: str
    matched_s: float | None  # seconds from the change until the rule held (None: not yet)
    pod: str | None = None  # ClientIP: the pod the client is pinned to


@dataclass(frozen=True, slots=True)
class Measurements:
    ready_to_first_hit: tuple[Lag, ...]
    gone_to_last_hit: tuple[Lag, ...]  # negative: the last hit came before the change was seen
    change_errors: tuple[tuple[str, int], ...]  # errors by kind within CHANGE_WINDOW_S of a change
    convergence: tuple[Convergence, ...]
    repicks: tuple[Repick, ...]


def measure(
    series: Series,
    events: Iterable[Event],
    *,
    ready_pods: Mapping[float, int] | None = None,
    change_window_s: float = CHANGE_WINDOW_S,
) -> Measurements:
    """The derived numbers from what a watch saw so far."""
    events = list(events)
    firsts: list[Lag] = []
    lasts: list[Lag] = []
    seen_ready: set[str] = set()
    seen_gone: set[str] = set()
    for e in events:
        if e.pod is None:
            continue
        if e.kind == EventKind.READY and e.pod not in seen_ready:
            seen_ready.add(e.pod)
            first = _first_at_or_after(series, e.pod, e.at_s)
            firsts.append(Lag(e.pod, e.at_s, first))
        elif e.kind in (EventKind.TERMINATING, EventKind.REMOVED) and e.pod not in seen_gone:
            seen_gone.add(e.pod)
            lasts.append(Lag(e.pod, e.at_s, series.last_hit.get(e.pod)))
    windows = [(e.at_s, e.at_s + change_window_s) for e in events]
    errors: Counter[str] = Counter()
    # Only the seconds from the earliest window on (nothing changed: none at all).
    first = math.floor(min(lo for lo, _ in windows)) - 2 if windows else 0
    for sec in series.seconds(after=first) if windows else ():
        if any(lo - 1 < sec.second + 1 and sec.second <= hi for lo, hi in windows):
            errors.update(dict(sec.errors))
    return Measurements(
        ready_to_first_hit=tuple(firsts),
        gone_to_last_hit=tuple(lasts),
        change_errors=tuple(sorted(errors.items())),
        convergence=tuple(
            convergence(series, e)
            for e in events
            if e.kind == EventKind.SERVICE and e.field == "sessionAffinity"
        ),
        repicks=tuple(series.repicks),
    )


def _first_at_or_after(series: Series, pod: str, at_s: float) -> float | None:
    """The first hit of ``pod`` since ``at_s``: exact when it is the pod's first hit ever, else per second."""
    first = series.first_hit.get(pod)
    if first is None:
        return None
    if first >= at_s:
        return first
    for sec in series.seconds(after=math.floor(at_s) - 1):
        if dict(sec.hits).get(pod):
            return max(float(sec.second), at_s)
    return None


def convergence(series: Series, change: Event) -> Convergence:
    """The first second after ``change`` from which every later second with replies follows the new rule:
    ClientIP — all replies from one and the same pod; None — replies spread over more than one pod (when
    more than one pod answered at all during that time)."""
    after = change.after or "None"
    start = math.floor(change.at_s)
    # Whole seconds after the change only (the one it happened in mixes both rules).
    seconds = [s for s in series.seconds(after=start - 1) if s.hits and s.second >= change.at_s]
    if not seconds:
        return Convergence(change.at_s, change.before or "", after, None)
    matched_from: int | None = None
    pinned: str | None = None
    if after == "ClientIP":
        for i, s in enumerate(seconds):
            pods = {p for p, _ in s.hits}
            if len(pods) == 1:
                pod = next(iter(pods))
                if all({p for p, _ in t.hits} == {pod} for t in seconds[i:]):
                    matched_from, pinned = s.second, pod
                    break
    else:
        answered = {p for s in seconds for p, _ in s.hits}
        if len(answered) > 1:
            for i, s in enumerate(seconds):
                if all(len(t.hits) > 1 for t in seconds[i:]):
                    matched_from = s.second
                    break
    matched = None if matched_from is None else round(max(0.0, matched_from - change.at_s), 3)
    return Convergence(change.at_s, change.before or "", after, matched, pinned)
