"""Hit distribution, latency quantiles, uniformity test and affinity verdict of a probe run (pure).

Long on purpose: the statistics (quantiles, the chi-square test and its gamma function) and the
verdict built from them are read together when a verdict surprises someone.
"""

from __future__ import annotations

import math
import operator
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from app.probe.repick import AffinityReport
from app.probe.seen import Seen
from app.probe.targets import Backend
from app.routing import Routing

UNIFORMITY_ALPHA = 0.001
MIN_EXPECTED_PER_POD = 5.0


# -- chi-square survival function via the regularized incomplete gamma function -----------------


def _gamma_p_series(a: float, x: float) -> float:
    term = 1.0 / a
    total = term
    n = a
    for _ in range(10_000):
        n += 1.0
        term *= x / n
        total += term
        if abs(term) < abs(total) * 1e-15:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_q_fraction(a: float, x: float) -> float:
    # Modified Lentz evaluation of the continued fraction for Q(a, x).
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        if abs(d) < tiny:
            d = tiny
        c = b + an / c
        if abs(c) < tiny:
            c = tiny
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def gamma_q(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x) = Γ(a, x) / Γ(a)."""
    if a <= 0:
        raise ValueError("a must be positive")
    if x <= 0:
        return 1.0
    if x < a + 1.0:
        return max(0.0, min(1.0, 1.0 - _gamma_p_series(a, x)))
    return max(0.0, min(1.0, _gamma_q_fraction(a, x)))


def chi2_sf(statistic: float, dof: int) -> float:
    """P(X >= statistic) for X ~ chi-square with ``dof`` degrees of freedom."""
    if dof < 1:
        raise ValueError("degrees of freedom must be >= 1")
    return gamma_q(dof / 2.0, statistic / 2.0)


@dataclass(frozen=True, slots=True)
class ChiSquare:
    statistic: float
    dof: int
    p_value: float

    @property
    def rejects_uniform(self) -> bool:
        return self.p_value < UNIFORMITY_ALPHA


def chi_square_uniform(counts: Sequence[int]) -> ChiSquare:
    n = sum(counts)
    k = len(counts)
    if k < 2 or n == 0:
        raise ValueError("need at least two cells and one observation")
    expected = n / k
    stat = sum((c - expected) ** 2 / expected for c in counts)
    return ChiSquare(stat, k - 1, chi2_sf(stat, k - 1))


def quantile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank quantile of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


# -- run summary ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """What stats needs of one probe result."""

    seq: int
    pod: str | None  # attributed pod
    error: str | None  # error kind, None when a reply came back
    latency_ms: float | None
    connection: int = 0
    reason: str | None = None  # why unattributed (or the error detail)
    method: str | None = None  # how the pod was attributed
    status: int | None = None  # HTTP status
    at_ms: float = 0.0  # when the request started, from the run's start


@dataclass(frozen=True, slots=True)
class PodStats:
    pod: str
    ip: str | None
    node: str | None
    hits: int
    share: float
    expected_share: float | None
    p50_ms: float | None
    p95_ms: float | None
    current: bool  # still a ready endpoint


@dataclass(frozen=True, slots=True)
class Summary:
    total: int
    done: int
    replies: int
    attributed: int
    pods: tuple[PodStats, ...]
    unattributed: int
    unattributed_reasons: tuple[tuple[str, int], ...]
    errors: tuple[tuple[str, int], ...]
    sequence: tuple[str | None, ...]  # pod per request (seq order); "!kind" for errors, None unattributed
    connections: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    chi_square: ChiSquare | None
    verdict: str
    explanations: tuple[str, ...] = field(default_factory=tuple)
    # Expected endpoints for the run's client beside what answered (None: the client's node is unknown).
    routing: Routing | None = None
    # The source address the server saw beside the client's own (None: not computed, e.g. stored before).
    seen: Seen | None = None
    # ClientIP: the client's picks over time, fresh picks after idle gaps and surprises (None: not ClientIP).
    affinity: AffinityReport | None = None

    @property
    def outcome(self) -> str:
        """What happened to the requests: ``none``, ``ok``, ``partial`` (some failed) or ``all errors``."""
        if self.done == 0:
            return "none"
        failed = sum(n for _, n in self.errors)
        if failed == 0:
            return "ok"
        return "all errors" if failed == self.done else "partial"

    def badge(self, status: str) -> tuple[str, str]:
        """(label, level) of a run's badge: a run that ended is only ``done`` (ok) if its requests got
        answers; every request failing is a failure whatever the runner's status says."""
        outcome = self.outcome
        if status == "running":
            return ("running · errors" if outcome in ("partial", "all errors") else "running"), "warn"
        if status != "done":
            return status.replace("_", " "), "bad"
        if outcome == "none":
            return "failed · no requests", "bad"
        if outcome == "all errors":
            return "failed · all errors", "bad"
        if outcome == "partial":
            failed = sum(n for _, n in self.errors)
            return f"partial · {failed} of {self.done} failed", "warn"
        return "done", "ok"


@dataclass(frozen=True, slots=True)
class RunShape:
    total: int
    session_affinity: str
    affinity_timeout_s: int | None
    reuse: bool
    concurrency: int
    protocol: str
    endpoints_changed: bool = False
    finished: bool = False


class Tally:
    """The counts a run's summary is made of, taken one outcome at a time as it arrives: the report of a
    running run then costs about what its pods cost, not another pass over its thousands of requests.

    The lists are kept in arrival order and sorted in place when a summary needs them: they are mostly
    sorted already (the part seen last time), which a stable sort handles in about one pass. Ties keep
    their arrival order, so the result is that of sorting every outcome afresh."""

    def __init__(self) -> None:
        self.count = 0
        self.hits: Counter[str] = Counter()
        self.latencies: dict[str, list[float]] = {}
        self.all_lat: list[float] = []
        self.errors: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.unattributed = 0
        self.connections: set[int] = set()
        self.sequence: list[tuple[int, str | None]] = []  # (seq, pod or "!kind" or None)

    @classmethod
    def of(cls, outcomes: Sequence[Outcome]) -> Tally:
        tally = cls()
        for o in outcomes:
            tally.add(o)
        return tally

    def add(self, o: Outcome) -> None:
        self.count += 1
        self.connections.add(o.connection)
        if o.error is not None:
            self.errors[o.error] += 1
            self.sequence.append((o.seq, "!" + o.error))
            return
        if o.latency_ms is not None:
            self.all_lat.append(o.latency_ms)
        if o.pod is None:
            self.unattributed += 1
            self.reasons[o.reason or "unknown"] += 1
            self.sequence.append((o.seq, None))
            return
        self.hits[o.pod] += 1
        self.sequence.append((o.seq, o.pod))
        if o.latency_ms is not None:
            self.latencies.setdefault(o.pod, []).append(o.latency_ms)

    def summary(self, shape: RunShape, current: Sequence[Backend], known: Sequence[Backend] = ()) -> Summary:
        """The summary of the outcomes added so far (see ``summarize``)."""
        ready = {b.pod for b in current if b.pod is not None and b.ready}
        info: dict[str, Backend] = {}
        for b in (*known, *current):
            if b.pod is not None:
                info[b.pod] = b
        hits = self.hits
        attributed = sum(hits.values())
        # An even share is the expectation only when every request opens a new connection and nothing
        # pins a client: with ClientIP one client gets one pod, with reused connections one per connection.
        uniform_expected = shape.session_affinity != "ClientIP" and not shape.reuse
        expected = 1.0 / len(ready) if ready and uniform_expected else None
        pods: list[PodStats] = []
        for pod in sorted(set(hits) | ready):
            lat = self.latencies.get(pod, [])
            lat.sort()
            info_b = info.get(pod)
            pods.append(
                PodStats(
                    pod=pod,
                    ip=info_b.ip if info_b else None,
                    node=info_b.node if info_b else None,
                    hits=hits[pod],
                    share=hits[pod] / attributed if attributed else 0.0,
                    expected_share=expected if pod in ready else None,
                    p50_ms=quantile(lat, 0.5),
                    p95_ms=quantile(lat, 0.95),
                    current=pod in ready,
                )
            )
        self.all_lat.sort()
        self.sequence.sort(key=_SEQ)
        unattributed, errors = self.unattributed, self.errors
        chi, verdict, explanations = _verdict(
            shape, hits, ready, attributed, unattributed, self.count, errors
        )
        return Summary(
            total=shape.total,
            done=self.count,
            replies=attributed + unattributed,
            attributed=attributed,
            pods=tuple(pods),
            unattributed=unattributed,
            unattributed_reasons=tuple(self.reasons.most_common()),
            errors=tuple(sorted(errors.items())),
            sequence=tuple(map(_LABEL, self.sequence)),
            connections=len(self.connections),
            latency_p50_ms=quantile(self.all_lat, 0.5),
            latency_p95_ms=quantile(self.all_lat, 0.95),
            chi_square=chi,
            verdict=verdict,
            explanations=tuple(explanations),
        )


_SEQ, _LABEL = operator.itemgetter(0), operator.itemgetter(1)


def summarize(
    outcomes: Sequence[Outcome], shape: RunShape, current: Sequence[Backend], known: Sequence[Backend] = ()
) -> Summary:
    """Summary of the results so far.

    ``current`` are the endpoints now, ``known`` every endpoint seen during the run.
    """
    return Tally.of(outcomes).summary(shape, current, known)


REUSE_EXPLANATION = (
    "Connection reuse is on. A Service balances connections, not requests: kube-proxy picks a backend "
    "when a connection opens (a DNAT rule on its first packet, remembered by conntrack), and every "
    "request sent over that connection reaches the same pod. With {c} connection(s) at most {c} pod(s) "
    "can answer. Clients with keep-alive (HTTP/1.1, gRPC, connection pools) see the same — "
    "that is not kube-proxy failing to balance."
)


def _verdict(
    shape: RunShape,
    hits: Counter[str],
    ready: set[str],
    attributed: int,
    unattributed: int,
    done: int,
    errors: Counter[str] | None = None,
) -> tuple[ChiSquare | None, str, list[str]]:
    explanations: list[str] = []
    errors = errors or Counter()
    not_http = errors.get("bad_response", 0)
    if shape.protocol == "HTTP" and not_http and not_http * 2 >= done:
        hint = (
            f"this port does not speak HTTP: {not_http} of {done} replies were not HTTP responses "
            "(bad_response). Try TCP, which reads a banner or an echo whatever the server speaks."
        )
        if attributed == 0 and unattributed == 0:
            return None, hint, explanations
        explanations.append(hint)
    if shape.reuse:
        explanations.append(REUSE_EXPLANATION.format(c=shape.concurrency))
    if shape.endpoints_changed:
        explanations.append(
            "The endpoints changed during the run; shares are measured over the whole run and the expected "
            "share refers to the current ready endpoints."
        )
    if attributed == 0:
        if done == 0:
            if shape.finished:
                return None, "failed before any request was answered (the reason is above)", explanations
            return None, "no results yet", explanations
        if unattributed:
            return None, f"{unattributed} replies but none could be attributed to a pod", explanations
        kinds = ", ".join(f"{n} {kind}" for kind, n in errors.most_common(3))
        return None, f"failed: every request failed, no replies ({kinds})", explanations
    top, top_hits = hits.most_common(1)[0]
    affinity = shape.session_affinity == "ClientIP"
    if affinity:
        timeout = f"; timeout {shape.affinity_timeout_s} s" if shape.affinity_timeout_s is not None else ""
        if len(hits) == 1:
            return (
                None,
                f"all {attributed} hits on pod {top}: consistent with ClientIP affinity{timeout}",
                (explanations),
            )
        return (
            None,
            f"hits spread over {len(hits)} pods although sessionAffinity is ClientIP{timeout}: "
            "the affinity entry expired, its pod went away, or requests came from several client IPs",
            explanations,
        )
    if shape.reuse and len(hits) <= shape.concurrency:
        share = "all" if len(hits) == 1 else f"{attributed} hits on {len(hits)} pods over"
        if len(hits) == 1:
            return None, f"{share} {attributed} hits on pod {top} over one reused connection", explanations
        return None, f"{share} {shape.concurrency} reused connections", explanations
    cells = sorted(ready | set(hits))
    if len(cells) < 2:
        return None, f"all {attributed} hits on pod {top} (the only endpoint)", explanations
    if shape.endpoints_changed or not set(hits) <= ready:
        return None, f"hits on {len(hits)} pods; endpoints changed, so no uniformity test", explanations
    if attributed / len(cells) < MIN_EXPECTED_PER_POD:
        return (
            None,
            f"{attributed} hits on {len(hits)} of {len(cells)} pods: too few for a uniformity test "
            f"(need ≥ {int(MIN_EXPECTED_PER_POD)} expected per pod)",
            explanations,
        )
    chi = chi_square_uniform([hits[c] for c in cells])
    if chi.rejects_uniform:
        verdict = (
            f"not uniform: χ² = {chi.statistic:.1f} with {chi.dof} d.f., p = {chi.p_value:.2g} < "
            f"{UNIFORMITY_ALPHA}; pod {top} took {top_hits / attributed:.0%}"
        )
    else:
        verdict = (
            f"consistent with a uniform spread over {len(cells)} pods: χ² = {chi.statistic:.1f} with "
            f"{chi.dof} d.f., p = {chi.p_value:.3f} (rejected only below {UNIFORMITY_ALPHA})"
        )
    return chi, verdict, explanations
