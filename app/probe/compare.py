"""Compare probe runs side by side: which pods answered each origin, and what the verdicts were.

Pure view models over run snapshots. The three ways of testing a Service from inside a cluster (the
dashboard's pod, exec into an existing pod, a short-lived probe pod) are three different clients to
kube-proxy: with ``None`` affinity each spreads on its own; with ``ClientIP`` each may be pinned to a
different pod. A snapshot is taken once, so a table never mixes two moments of a running run.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from app.probe.run import RUN_ID_PATTERN, Run
from app.routing import Routing

MAX_COMPARED = 6
RUN_ID_RE = re.compile(RUN_ID_PATTERN)


@dataclass(frozen=True, slots=True)
class PodShare:
    pod: str
    hits: int
    share: float
    expected_share: float | None


@dataclass(frozen=True, slots=True)
class RunSnapshot:
    """What the runs table and the comparison show of one run."""

    id: str
    namespace: str
    service: str
    port: str  # name:port, or the number
    protocol: str
    origin: str
    client_pod: str | None
    client_ip: str | None
    client_node: str | None
    count: int
    done: int
    reuse: bool
    concurrency: int
    status: str
    verdict: str
    session_affinity: str
    affinity_timeout_s: int | None
    pods: tuple[PodShare, ...]
    unattributed: int
    errors: int
    created: float
    p_value: float | None = None  # the uniformity test's, when there was one
    error: str | None = None  # why it did not finish as planned (e.g. "interrupted at 30/100: ...")
    routing: Routing | None = None  # expected versus observed for the run's client (None: node unknown)

    @property
    def failed(self) -> bool:
        """Nothing to compare: the run failed or no reply could be put on a pod."""
        return self.status in ("failed", "timed_out") or not any(p.hits for p in self.pods)

    @property
    def client(self) -> str:
        """The client kube-proxy sees, as far as known."""
        parts = [p for p in (self.client_pod, self.client_ip) if p]
        if len(parts) == 2:
            return f"{parts[0]} ({parts[1]})"
        return parts[0] if parts else "unknown"

    @property
    def answering(self) -> tuple[PodShare, ...]:
        """Pods with hits, most hits first (ties by name)."""
        return tuple(sorted((p for p in self.pods if p.hits), key=lambda p: (-p.hits, p.pod)))

    @property
    def distribution(self) -> str:
        """A one-line summary, e.g. ``3 pods: web-a 34% · web-b 33% · web-c 33%``."""
        answering = self.answering
        if not answering:
            return "no attributed reply"
        shown = " · ".join(f"{p.pod} {p.share:.0%}" for p in answering[:4])
        more = f" · +{len(answering) - 4} more" if len(answering) > 4 else ""
        noun = "pod" if len(answering) == 1 else "pods"
        return f"{len(answering)} {noun}: {shown}{more}"

    @property
    def created_text(self) -> str:
        return time.strftime("%H:%M:%S", time.gmtime(self.created))


def snapshot(run: Run) -> RunSnapshot:
    s = run.summary()
    spec, port = run.spec, run.target.port
    return RunSnapshot(
        id=run.id,
        namespace=spec.namespace,
        service=spec.service,
        port=f"{port.name}:{port.port}" if port.name else str(port.port),
        protocol=spec.protocol.value,
        origin=spec.origin.value,
        client_pod=run.client_pod,
        client_ip=run.client_ip,
        client_node=run.client_node,
        count=spec.count,
        done=s.done,
        reuse=spec.reuse,
        concurrency=spec.concurrency,
        status=run.status,
        verdict=s.verdict,
        session_affinity=run.target.session_affinity,
        affinity_timeout_s=run.target.affinity_timeout_s,
        pods=tuple(PodShare(p.pod, p.hits, p.share, p.expected_share) for p in s.pods),
        unattributed=s.unattributed,
        errors=sum(n for _, n in s.errors),
        created=run.created,
        p_value=s.chi_square.p_value if s.chi_square is not None else None,
        error=run.error,
        routing=s.routing,
    )


def parse_run_ids(values: Sequence[str], limit: int = MAX_COMPARED) -> list[str]:
    """``ids=a,b`` and/or ``ids=a&ids=b``: distinct run ids in the given order; ValueError if invalid."""
    ids: list[str] = []
    for value in values:
        for part in value.split(","):
            part = part.strip().lower()
            if not part:
                continue
            if not RUN_ID_RE.match(part):
                raise ValueError(f"{part[:20]!r} is not a run id (12 hex digits)")
            if part not in ids:
                ids.append(part)
    if not 2 <= len(ids) <= limit:
        raise ValueError(f"choose between 2 and {limit} runs to compare (got {len(ids)})")
    return ids


@dataclass(frozen=True, slots=True)
class ComparisonRow:
    pod: str
    cells: tuple[PodShare | None, ...]  # one per run; None: the pod was no endpoint of that run


@dataclass(frozen=True, slots=True)
class Comparison:
    runs: tuple[RunSnapshot, ...]
    rows: tuple[ComparisonRow, ...]
    notes: tuple[str, ...]
    conclusion: str = ""
    failed_ids: frozenset[str] = frozenset()  # runs without attributed replies: marked, not given columns


def conclusion(runs: Sequence[RunSnapshot]) -> str:
    """The comparison in one line: who went where, sticky or spread."""
    ok = [r for r in runs if not r.failed]
    left_out = len(runs) - len(ok)
    tail = f" ({left_out} failed run{'s' if left_out > 1 else ''} left out)" if left_out else ""
    if not ok:
        return "no run got a reply that could be put on a pod: nothing to compare" + tail
    if len(ok) == 1:
        return f"only run {ok[0].id} has attributed replies: {ok[0].distribution}" + tail
    sticky = [r for r in ok if len(r.answering) == 1]
    spread = [r for r in ok if len(r.answering) > 1]
    clients = len({(r.origin, r.client) for r in ok})
    if not spread:
        pods = {r.answering[0].pod for r in sticky}
        who = (
            f"{clients} client{'s' if clients > 1 else ''}"
            if clients > 1
            else f"{len(ok)} runs of one client"
        )
        if len(pods) == 1:
            return f"{who} → one pod ({next(iter(pods))}) for every run" + tail
        each = "each sticky" if len(pods) == len(ok) else "each run on one pod"
        return f"{who} → {len(pods)} pods, {each}" + tail
    if not sticky:
        ps = [f"{r.p_value:.2g}" for r in spread if r.p_value is not None]
        pods = {p.pod for r in spread for p in r.answering}
        stat = f", p = {', '.join(ps)}" if ps else ""
        return f"spread over {len(pods)} pods in every run{stat}" + tail
    return f"{len(sticky)} run(s) stuck to one pod, {len(spread)} spread over several" + tail


def compare(runs: Sequence[RunSnapshot]) -> Comparison:
    """Per-pod shares side by side (pods sorted by name), with notes on what makes runs comparable."""
    pods = sorted({p.pod for r in runs for p in r.pods})
    by_run = [{p.pod: p for p in r.pods} for r in runs]
    rows = tuple(ComparisonRow(pod, tuple(m.get(pod) for m in by_run)) for pod in pods)
    notes: list[str] = []
    targets = {(r.namespace, r.service, r.port, r.protocol) for r in runs}
    if len({(r.namespace, r.service) for r in runs}) > 1:
        notes.append("these runs probed different Services: their pods are different backends")
    elif len(targets) > 1:
        notes.append("these runs probed different ports or protocols of the Service")
    if any(r.reuse for r in runs) and not all(r.reuse for r in runs):
        notes.append(
            "some runs reused connections: a Service balances connections, not requests, so a reused "
            "connection stays on one pod whatever the affinity"
        )
    if len({r.session_affinity for r in runs}) > 1:
        notes.append("the session affinity differed between these runs (it was changed in between)")
    if any(r.session_affinity == "ClientIP" for r in runs) and len({r.origin for r in runs}) > 1:
        notes.append(
            "with ClientIP affinity kube-proxy pins each client IP to one pod: each origin is a different "
            "client, so each may be pinned to a different pod"
        )
    if any(r.status == "running" for r in runs):
        notes.append("a run is still going: reload for its final numbers")
    failed = frozenset(r.id for r in runs if r.failed)
    if failed:
        notes.append("runs without attributed replies are marked and get no column")
    return Comparison(tuple(runs), rows, tuple(notes), conclusion(runs), failed)
