"""One probe run: its spec and target, the results so far, and the endpoints it re-reads as it goes.

Results are appended here and followers read them with a cursor, so none is lost however slow the
follower. ``clock`` is a seam: tests move time instead of sleeping.

When a run ends its report is frozen: the endpoints are read one last time (so ``endpoints_changed`` is
set before the report is built), the summary is computed once with ``finished=True`` and kept, and from
then on ``summary()`` returns it unchanged, whatever happens to the Service's pods afterwards. Each result
also goes to the run's ``sink`` (the run store, when there is one).

Long on purpose: one object with its state (results, endpoints seen, frozen report, followers); its
methods are the only code that changes that state.
"""

from __future__ import annotations

import asyncio
import enum
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

from app import routing
from app.domain import ObjectKey, ServiceKey
from app.probe import diagnosis, repick
from app.probe.attribution import Attribution, Candidate, Fingerprints, Matcher, Reply, Rule, attribute
from app.probe.seen import PeerTally
from app.probe.sink import NULL_SINK, RunSink
from app.probe.spec import ProbeSpec
from app.probe.stats import Outcome, RunShape, Summary, Tally, summarize
from app.probe.targets import Backend, ClusterView, ProbeTarget, backends, forbidden_endpoint
from app.probe.verdicts import routing_for

SAMPLE_CHARS = 300
MAX_SAMPLES = 24
ENDPOINTS_MAX_AGE_S = 0.05  # requests re-read the endpoints from the cache at most this often
ATTRIBUTION_CACHE = 64  # distinct replies whose attribution a run remembers (cleared on endpoint changes)
RUN_ID_BYTES = 6
RUN_ID_PATTERN = rf"^[0-9a-f]{{{RUN_ID_BYTES * 2}}}$"  # what new_run_id makes; URLs are checked against it


def new_run_id() -> str:
    return secrets.token_hex(RUN_ID_BYTES)


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"  # svcscope stopped (or died) while the run was going on


class AttributionMode(enum.StrEnum):
    """How a run tells which pod answered (see the README's "How attribution works")."""

    RULE = "rule"  # an explicit identity rule
    AUTO = "auto"  # pods name themselves in their replies
    FINGERPRINT = "fingerprint"  # replies matched by content against direct probes of each pod
    NONE = "none"  # no way to tell


@dataclass(slots=True)
class Calibration:
    """Direct probes of each endpoint before the run (only without an explicit rule)."""

    mode: AttributionMode = AttributionMode.RULE
    note: str = ""
    fingerprints: Fingerprints | None = None
    auto_ok: bool = True
    probed: dict[str, str] = field(default_factory=dict)  # pod -> outcome text


class Run:
    def __init__(
        self,
        run_id: str,
        spec: ProbeSpec,
        target: ProbeTarget,
        rule: Rule | None,
        view: ClusterView | None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        """``view`` is None only for a run read back from the store (finished; its endpoints frozen)."""
        self.id = run_id
        self.spec = spec
        self.target = target
        self.rule = rule
        self.clock = clock
        self._view = view
        self.created = time.time()
        self.started = clock()
        self.finished_at: float | None = None
        self.status = RunStatus.RUNNING
        self.error: str | None = None
        self.results: list[Outcome] = []
        self._tally = Tally()  # the results' counts, kept as they arrive (a summary need not recount)
        self.samples: dict[str, str] = {}
        self.calibration = Calibration()
        self.first_reply_ms: float | None = None
        self.endpoints_changed = False
        self.known: dict[str, Backend] = {}
        self.task: asyncio.Task[None] | None = None
        self._issued = 0
        self._connections = 0
        self._changed = asyncio.Event()
        self._waiting = 0  # followers waiting on _changed (no new Event per result when there are none)
        self._attributions: dict[Reply, Attribution] = {}
        self._current: tuple[Backend, ...] = ()
        self._current_key: frozenset[tuple[str | None, str, bool]] | None = None
        self._matcher = Matcher(())
        self._candidates: tuple[Candidate, ...] = ()
        self.forbidden: str | None = None  # set when the endpoints turn to a refused address mid-run
        self._read_at = 0.0
        # Where the requests come from (the client kube-proxy sees), when known: a pod name and its IP.
        self.client_pod: str | None = None
        self.client_ip: str | None = None
        # The dashboard's bound on requests in flight across its runs (its own runs only; None elsewhere).
        self.in_flight_cap: int | None = None
        # The client's node (whose kube-proxy rules the requests meet): given for the dashboard, else read
        # from the client pod (in ``client_namespace``) once it is scheduled. None: unknown, no verdict.
        self.client_node: str | None = None
        self.client_namespace: str | None = None
        # The source addresses the replies say the server saw (compared with client_ip: SNAT).
        self.peers = PeerTally()
        # What the run waits for besides its requests, e.g. "waiting for the apiserver (...)"; None: nothing.
        self.waiting: str | None = None
        self.sink: RunSink = NULL_SINK
        # The report as it was when the run ended (never recomputed against later endpoints).
        self.final: Summary | None = None
        # Whether ``results`` holds every result (False for a finished run kept only as a list entry:
        # its results are read from the store).
        self.complete = True
        self._summary_key: tuple[object, ...] | None = None
        self._summary: Summary | None = None

    @classmethod
    def restored(
        cls,
        run_id: str,
        spec: ProbeSpec,
        target: ProbeTarget,
        *,
        rule: Rule | None,
        created: float,
        status: RunStatus,
        error: str | None,
        elapsed_s: float,
        results: list[Outcome],
        complete: bool,
        summary: Summary,
        current: tuple[Backend, ...],
        known: dict[str, Backend],
        endpoints_changed: bool,
        calibration: Calibration,
        samples: dict[str, str],
        first_reply_ms: float | None,
        client_pod: str | None,
        client_ip: str | None,
        client_node: str | None = None,
    ) -> Run:
        """A finished run read back (from the store): shown exactly as it was when it ended."""
        run = cls(run_id, spec, target, rule, None, clock=lambda: 0.0)
        run.created = created
        run.status, run.error = status, error
        run.started, run.finished_at = 0.0, elapsed_s
        run.results, run.complete = results, complete
        run.final = summary
        run._current, run.known, run.endpoints_changed = current, known, endpoints_changed
        run.calibration, run.samples, run.first_reply_ms = calibration, samples, first_reply_ms
        run.client_pod, run.client_ip = client_pod, client_ip
        run.client_node = client_node or (summary.routing.client_node if summary.routing else None)
        run._issued = spec.count
        return run

    # -- endpoints, re-read from the view so scaling mid-run is seen
    def current(self, max_age_s: float = 0.0) -> tuple[Backend, ...]:
        """The endpoints now; with ``max_age_s``, a copy at most that old (the per-request path)."""
        if self.final is not None:  # frozen when the run ended: later changes are not this run's
            return self._current
        t = self.clock()
        if self._view is None or (
            max_age_s and self._current_key is not None and t - self._read_at < max_age_s
        ):
            return self._current
        self._read_at = t
        if self.client_node is None or self.client_ip is None:
            self._find_client_node()
        now = backends(self._view, self.target)
        key = frozenset((b.pod, b.ip, b.ready) for b in now)
        if key != self._current_key:
            if self._current_key is not None:
                self.endpoints_changed = True
            self._current_key = key
            self._current = now
            self._candidates = tuple(Candidate(b.pod, b.ip) for b in now if b.pod is not None)
            self._matcher = Matcher(self._candidates)
            self._attributions.clear()
            for b in now:
                if b.pod is not None:
                    self.known[b.pod] = b
            self.forbidden = forbidden_endpoint(self._view, self.target)
            self.sink.note_endpoints(now, tuple(self.known.values()), self.endpoints_changed)
        return self._current

    def pod_named(self, text: str) -> str | None:
        """The current endpoint's pod whose name or IP is exactly ``text`` (a remote client's report)."""
        return self._matcher.pod_for(text)

    def pods_named_in(self, text: str) -> set[str]:
        """Every current endpoint's pod whose name or IP appears in ``text``."""
        return self._matcher.pods_in(text)

    @property
    def finished(self) -> bool:
        return self.status != RunStatus.RUNNING

    @property
    def elapsed_s(self) -> float:
        end = self.finished_at if self.finished_at is not None else self.clock()
        return end - self.started

    def restart_clock(self) -> None:
        """The run's time starts now (after calibration or once a remote client is about to send)."""
        self.started = self.clock()

    def next_seq(self) -> int | None:
        if self._issued >= self.spec.count:
            return None
        self._issued += 1
        return self._issued

    def next_connection(self) -> int:
        self._connections += 1
        return self._connections

    def add(self, outcome: Outcome, sample: str | None = None) -> None:
        self.results.append(outcome)
        self._tally.add(outcome)
        if outcome.error is None and self.first_reply_ms is None:
            self.first_reply_ms = outcome.at_ms + (outcome.latency_ms or 0.0)
        kept: tuple[str, str] | None = None
        if sample is not None and len(self.samples) < MAX_SAMPLES:
            key = _sample_key(outcome)
            if key not in self.samples:
                self.samples[key] = sample
                kept = (key, sample)
        self.sink.add(outcome, kept)
        self._notify()

    def wants_sample(self, outcome: Outcome) -> bool:
        """Whether ``add`` would keep a sample for this outcome (so the hot path builds it only then)."""
        return len(self.samples) < MAX_SAMPLES and _sample_key(outcome) not in self.samples

    def set_waiting(self, note: str | None) -> None:
        if note != self.waiting:
            self.waiting = note
            self._notify()

    def finish(self, status: RunStatus, error: str | None = None) -> None:
        """End the run and freeze its report (the endpoint sets, the flags and the verdict)."""
        if self.finished:
            return
        self.current()  # a change since the last request must be flagged in the frozen report
        self._find_client_node()
        self.status = status
        self.error = error
        self.finished_at = self.clock()
        self.final = self._summarize()
        self._notify()

    def trim(self) -> None:
        """Drop the per-request results of a finished run whose results are stored elsewhere (the
        frozen summary stays, without its per-request sequence): what a list needs, in little memory."""
        if not self.finished or self.final is None:
            return
        self.final = replace(self.final, sequence=())
        self.results = []
        self._tally = Tally()
        self.complete = False

    @property
    def done(self) -> int:
        """Requests with a result so far."""
        return self.final.done if self.final is not None else len(self.results)

    def _notify(self) -> None:
        if not self._waiting:  # nobody waits: the next waiter checks the results before waiting
            return
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _wait(self) -> None:
        self._waiting += 1
        try:
            await self._changed.wait()
        finally:
            self._waiting -= 1

    async def follow(self, cursor: int = 0) -> AsyncIterator[list[Outcome]]:
        """Batches of results from ``cursor`` on, until the run is finished and all were delivered."""
        while True:
            if cursor < len(self.results):
                batch = self.results[cursor:]
                cursor += len(batch)
                yield batch
                continue
            if self.finished:
                return
            await self._wait()

    async def wait_changed(self) -> None:
        if not self.finished:
            await self._wait()

    def summary(self) -> Summary:
        """The report: frozen once the run ended; while it runs, computed again only when a result
        arrived or the endpoints changed (many viewers of one run share one computation)."""
        if self.final is not None:
            return self.final
        self.current()
        key = (
            len(self.results),
            self._current_key,
            self.endpoints_changed,
            self.finished,
            self.client_node,
            self.client_ip,
        )
        if self._summary is None or key != self._summary_key:
            self._summary, self._summary_key = self._summarize(), key
        return self._summary

    def _summarize(self) -> Summary:
        shape = RunShape(
            total=self.spec.count,
            session_affinity=self.target.session_affinity,
            affinity_timeout_s=self.target.affinity_timeout_s,
            reuse=self.spec.reuse,
            concurrency=self.spec.concurrency,
            protocol=self.spec.protocol.value,
            endpoints_changed=self.endpoints_changed,
            finished=self.finished,
        )
        known = tuple(self.known.values())
        if self._tally.count == len(self.results):
            summary = self._tally.summary(shape, self._current, known)
        else:  # results set some other way (read back from the store): counted afresh
            summary = summarize(self.results, shape, self._current, known)
        evidence = diagnosis.evidence_of(
            summary,
            self.calibration.probed,
            self._removed_endpoints(),
            session_affinity=self.target.session_affinity,
            reuse=self.spec.reuse,
        )
        summary = diagnosis.apply(summary, diagnosis.diagnose(evidence))
        seen = self.peers.seen(self.client_ip, self.spec.origin)
        summary = replace(summary, affinity=self._affinity(), seen=seen)
        return replace(summary, routing=self._routing(summary))

    def _find_client_node(self) -> None:
        """The client pod's node and IP, once the pod is watched, scheduled and given its address (a probe
        pod is gone at the end: this is tried on every endpoint read until both are known)."""
        if self._view is None or not self.client_pod or self.client_namespace is None:
            return
        if self.client_node is not None and self.client_ip is not None:
            return
        pod = self._view.pod(ObjectKey(self.client_namespace, self.client_pod))
        if pod is not None and pod.node_name and self.client_node is None:
            self.client_node = pod.node_name
        if pod is not None and pod.pod_ip and self.client_ip is None:
            self.client_ip = pod.pod_ip

    def _routing(self, summary: Summary) -> routing.Routing | None:
        """What kube-proxy on the client's node may pick for this port now, against what answered."""
        if self._view is None:
            return None
        affinity = summary.affinity
        return routing_for(
            self._view,
            self.target,
            self.client_node,
            self.client_ip,
            {p.pod: p.hits for p in summary.pods},
            dict(summary.errors),
            endpoints_changed=self.endpoints_changed,
            fresh_picks=affinity.repicks if affinity is not None and affinity.changes_explained else 0,
        )

    def _affinity(self) -> repick.AffinityReport | None:
        """A ClientIP run's picks over time (one client per run)."""
        if self.target.session_affinity != "ClientIP":
            return None
        client = " ".join(p for p in (self.client_pod, self.client_ip) if p) or None
        ready = sum(1 for b in self._current if b.ready)
        return repick.report(
            self.results, timeout_s=self.target.affinity_timeout_s, endpoints=ready, client=client
        )

    def _removed_endpoints(self) -> list[diagnosis.Removed]:
        """Addresses that left the Service shortly before or during the run (if the view remembers them:
        the watch cache does); stale Service rules may still have sent requests there."""
        history = getattr(self._view, "removed_endpoints", None)
        if history is None:
            return []
        end = self.finished_at if self.finished_at is not None else self.clock()
        key = ServiceKey(self.spec.namespace, self.spec.service)
        return [
            diagnosis.Removed(r.ip, r.pod, end - r.at)
            for r in history(key, diagnosis.REMOVAL_WINDOW_S)
            if self.started - diagnosis.REMOVAL_WINDOW_S <= r.at <= end
        ]

    def attribute(self, reply: Reply) -> Attribution:
        """Which pod sent ``reply`` among the endpoints re-read at most ``ENDPOINTS_MAX_AGE_S`` ago
        (``who_sent``), with the source address the reply reports counted for the run's SNAT check."""
        self.current(ENDPOINTS_MAX_AGE_S)
        self.peers.note_reply(reply.body)
        return self.who_sent(reply)

    def who_sent(self, reply: Reply) -> Attribution:
        """Which pod sent ``reply`` among the endpoints as last read (``current``). A pure function of the
        reply and those endpoints, so the answer is remembered per distinct reply (a backend's replies
        repeat) until the endpoints change."""
        known = self._attributions.get(reply)
        if known is not None:
            return known
        cal = self.calibration
        who = attribute(
            reply,
            self._candidates,
            rule=self.rule,
            fingerprints=cal.fingerprints,
            matcher=self._matcher,
            auto=cal.auto_ok,
        )
        if len(self._attributions) >= ATTRIBUTION_CACHE:  # replies that never repeat: bounded memory
            self._attributions.clear()
        self._attributions[reply] = who
        return who


def _sample_key(outcome: Outcome) -> str:
    return outcome.pod or ("error " + outcome.error if outcome.error else "unattributed")


def sample_of(reply: Reply) -> str:
    text = reply.body[:SAMPLE_CHARS].decode("utf-8", errors="replace")
    head = f"{reply.status} " if reply.status is not None else ""
    more = "…" if len(reply.body) > SAMPLE_CHARS else ""
    return f"{head}{text}{more}"
