"""ClientIP affinity over time, the pure part: when kube-proxy picked a pod afresh for a client, and whether
the pod changed then.

kube-proxy remembers, per client address, the pod it picked and when that client last opened a connection
(iptables: the ``recent`` match with ``--seconds <timeout>``; nftables: a set element with that timeout). Each
new connection refreshes the entry. So the pin ends only after an *idle gap* longer than
``sessionAffinityConfig.clientIP.timeoutSeconds`` between two connections of the same client: a busy client
never lets it expire, which is why a short timeout "does not work" for it. After such a gap the next
connection gets a fresh pick, which may land on the same pod again by chance (1 in N with N endpoints).

What counts here is the timing: a gap longer than the timeout *is* a fresh pick whether or not the pod
changed, and a change of pod after a shorter gap is unexpected (the endpoints changed, or the client's
address did). Gaps are measured between the starts of consecutive requests, failed ones included (their
first packet passed kube-proxy's rules and refreshed the entry just the same). Gaps within ``BORDER_S`` of
the timeout are too close to call (kernel timer granularity, the time a connection takes to open): neither
a fresh pick nor a surprise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # stats keeps a report in its Summary
    from app.probe.stats import Outcome

DEFAULT_TIMEOUT_S = 10800  # Kubernetes' default sessionAffinityConfig.clientIP.timeoutSeconds
BORDER_S = 0.25
MAX_PICKS = 200  # picks kept for the page (every fresh pick and change is kept besides, up to MAX_NOTABLE)
MAX_NOTABLE = 100


@dataclass(frozen=True, slots=True)
class Pick:
    """One reply of the client's, in start order, with the idle gap before its request."""

    seq: int
    at_s: float  # request start, seconds from the run's start
    pod: str
    gap_s: float | None  # since the previous request's start (None: the run's first request)
    fresh: bool  # the gap exceeded the timeout: kube-proxy picked afresh
    changed: bool  # another pod than the previous reply's
    previous: str | None  # the previous reply's pod
    borderline: bool = False  # the gap is within BORDER_S of the timeout: too close to call

    @property
    def unexpected(self) -> bool:
        """The pod changed although the pin should have held (the gap stayed under the timeout)."""
        return self.changed and not self.fresh and self.gap_s is not None and not self.borderline


@dataclass(frozen=True, slots=True)
class AffinityReport:
    """A ClientIP run's picks over time and what they mean, in numbers and words."""

    client: str | None  # the client kube-proxy saw (pod and/or IP), when known
    timeout_s: int
    requests: int  # requests sent (replies and failures)
    longest_gap_s: float | None  # the longest idle gap between two request starts
    longest_kept_gap_s: float | None  # the longest gap that stayed under the timeout (refreshed the pin)
    fresh: tuple[Pick, ...]  # picks after a gap longer than the timeout (pod changed or not)
    unexpected: tuple[Pick, ...]  # changes of pod after a gap shorter than the timeout
    picks: tuple[Pick, ...]  # the first MAX_PICKS replies plus every notable one, in start order
    endpoints: int  # ready endpoints at the end: the chance of the same pod after a fresh pick is 1/N
    lines: tuple[str, ...]  # the story in words

    @property
    def repicks(self) -> int:
        """Fresh picks that moved the client to another pod."""
        return sum(1 for p in self.fresh if p.changed)

    @property
    def changes_explained(self) -> bool:
        """Every change of pod happened at a fresh pick (or too close to the timeout to call)."""
        return not self.unexpected


def report(
    outcomes: Iterable[Outcome],
    *,
    timeout_s: int | None,
    endpoints: int,
    client: str | None = None,
) -> AffinityReport:
    """The picks of one client's requests (``outcomes`` in any order; sorted by start here)."""
    timeout = timeout_s if timeout_s is not None else DEFAULT_TIMEOUT_S
    ordered = sorted(outcomes, key=lambda o: (o.at_ms, o.seq))
    picks: list[Pick] = []
    fresh: list[Pick] = []
    unexpected: list[Pick] = []
    longest: float | None = None
    kept: float | None = None
    prev_start: float | None = None
    idle: float | None = None  # the longest gap since the last reply (failures refresh but do not pick)
    fresh_pending = False
    last_pod: str | None = None
    for o in ordered:
        at = o.at_ms / 1000.0
        gap = None if prev_start is None else max(0.0, at - prev_start)
        prev_start = at
        if gap is not None:
            longest = gap if longest is None else max(longest, gap)
            if gap <= timeout - BORDER_S:
                kept = gap if kept is None else max(kept, gap)
            idle = gap if idle is None else max(idle, gap)
            if gap > timeout + BORDER_S:
                fresh_pending = True
        if o.error is not None or o.pod is None:
            continue
        border = idle is not None and not fresh_pending and abs(idle - timeout) <= BORDER_S
        pick = Pick(
            seq=o.seq,
            at_s=round(at, 3),
            pod=o.pod,
            gap_s=None if idle is None else round(idle, 3),
            fresh=fresh_pending,
            changed=last_pod is not None and o.pod != last_pod,
            previous=last_pod,
            borderline=border,
        )
        if pick.fresh and len(fresh) < MAX_NOTABLE:
            fresh.append(pick)
        if pick.unexpected and len(unexpected) < MAX_NOTABLE:
            unexpected.append(pick)
        if len(picks) < MAX_PICKS or ((pick.fresh or pick.changed) and len(picks) < MAX_PICKS + MAX_NOTABLE):
            picks.append(pick)
        last_pod, idle, fresh_pending = o.pod, None, False
    done = sum(1 for _ in ordered)
    rep = AffinityReport(
        client=client,
        timeout_s=timeout,
        requests=done,
        longest_gap_s=None if longest is None else round(longest, 3),
        longest_kept_gap_s=None if kept is None else round(kept, 3),
        fresh=tuple(fresh),
        unexpected=tuple(unexpected),
        picks=tuple(picks),
        endpoints=endpoints,
        lines=(),
    )
    return _with_lines(rep)


def _with_lines(r: AffinityReport) -> AffinityReport:
    lines: list[str] = []
    t = r.timeout_s
    if r.requests == 0:
        return r
    if not r.fresh and r.longest_gap_s is not None:
        observed = (
            "none was observed"
            if not r.unexpected
            else f"yet the pod changed {len(r.unexpected)} time(s) (see below)"
        )
        lines.append(
            f"{r.requests} requests, longest gap {r.longest_gap_s:.1f} s < timeout {t} s: each new "
            f"connection refreshed the pin, so no re-pick was expected; {observed}"
        )
    elif r.longest_gap_s is None:
        lines.append(f"1 request: nothing to compare it with (timeout {t} s)")
    elif r.longest_kept_gap_s is not None:
        lines.append(
            f"between the pauses the longest gap was {r.longest_kept_gap_s:.1f} s < timeout {t} s: "
            "the pin was refreshed by each request"
        )
    for p in r.fresh:
        gap = p.gap_s or 0.0
        if p.changed:
            what = f"{p.previous} → {p.pod}"
        elif p.previous is None:
            what = f"{p.pod} (no earlier reply to compare with)"
        else:
            chance = f"1 in {r.endpoints}" if r.endpoints > 1 else "the only endpoint"
            what = f"{p.pod} again (the same pod by chance: {chance})"
        lines.append(
            f"pause {gap:.1f} s > timeout {t} s before request {p.seq}: fresh pick after the pause: {what}"
        )
    for p in r.unexpected:
        gap = p.gap_s or 0.0
        lines.append(
            f"request {p.seq}: {p.previous} → {p.pod} after a gap of only {gap:.1f} s < timeout {t} s: "
            "not an affinity expiry (the endpoints changed, the pinned pod went away, or the client's "
            "address changed)"
        )
    return replace(r, lines=tuple(lines))


# -- as JSON (the run's API and the run store's frozen summary share this shape) ----------------------


def _pick_json(p: Pick) -> dict[str, Any]:
    return asdict(p)


def to_json(r: AffinityReport) -> dict[str, Any]:
    return {
        "client": r.client,
        "timeout_s": r.timeout_s,
        "requests": r.requests,
        "longest_gap_s": r.longest_gap_s,
        "longest_kept_gap_s": r.longest_kept_gap_s,
        "fresh_picks": len(r.fresh),
        "repicks": r.repicks,
        "unexpected_changes": len(r.unexpected),
        "endpoints": r.endpoints,
        "lines": list(r.lines),
        "fresh": [_pick_json(p) for p in r.fresh],
        "unexpected": [_pick_json(p) for p in r.unexpected],
        "picks": [_pick_json(p) for p in r.picks],
    }


def _pick_of(d: Mapping[str, Any]) -> Pick:
    return Pick(
        seq=int(d["seq"]),
        at_s=float(d["at_s"]),
        pod=str(d["pod"]),
        gap_s=None if d.get("gap_s") is None else float(d["gap_s"]),
        fresh=bool(d["fresh"]),
        changed=bool(d["changed"]),
        previous=d.get("previous"),
        borderline=bool(d.get("borderline", False)),
    )


def from_json(d: object) -> AffinityReport | None:
    """A report as ``to_json`` wrote it; None for anything else (a summary stored before reports)."""
    if not isinstance(d, dict):
        return None
    return AffinityReport(
        client=d.get("client"),
        timeout_s=int(d["timeout_s"]),
        requests=int(d["requests"]),
        longest_gap_s=d.get("longest_gap_s"),
        longest_kept_gap_s=d.get("longest_kept_gap_s"),
        fresh=tuple(_pick_of(p) for p in d.get("fresh", ())),
        unexpected=tuple(_pick_of(p) for p in d.get("unexpected", ())),
        picks=tuple(_pick_of(p) for p in d.get("picks", ())),
        endpoints=int(d.get("endpoints", 0)),
        lines=tuple(str(x) for x in d.get("lines", ())),
    )
