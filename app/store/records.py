"""What the store keeps and returns: plain frozen records, no database types.

Outcomes and endpoints are the probe domain's own ``Outcome`` and ``Backend``; everything a run needs to be
shown again after a restart (its spec, target facts, frozen endpoint sets, frozen summary) has a record here.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from app.probe.stats import Outcome, RunShape, Summary, summarize
from app.probe.targets import Backend, ProbeTarget
from app.probe.watch import Second

# Values of a spec as stored (JSON scalars).
SpecValue = str | int | float | bool | None


class Status:
    """Run states as stored; ``interrupted`` is set only by the store (the process died mid-run)."""

    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"

    ALL = frozenset({RUNNING, DONE, CANCELLED, FAILED, TIMED_OUT, INTERRUPTED})


class Kind:
    RUN = "run"  # a fixed number of requests
    WATCH = "watch"  # continuous probing; stored as per-second aggregates


def spec_fields(spec: object) -> dict[str, SpecValue]:
    """Every field of a spec dataclass as JSON scalars (enums by value), e.g. of a ``ProbeSpec``."""
    if not dataclasses.is_dataclass(spec) or isinstance(spec, type):
        raise TypeError(f"expected a dataclass instance, got {type(spec).__name__}")
    out: dict[str, SpecValue] = {}
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if isinstance(value, enum.Enum):
            value = value.value
        if value is not None and not isinstance(value, str | int | float | bool):
            raise TypeError(f"spec field {f.name} is a {type(value).__name__}, not a JSON scalar")
        out[f.name] = value
    return out


@dataclass(frozen=True, slots=True)
class TargetFacts:
    """The facts of the probed Service port that a report shows and a re-summary needs."""

    namespace: str
    service: str
    address: str  # the ClusterIP
    port: int
    port_name: str | None
    protocol: str  # HTTP | TCP | UDP
    session_affinity: str
    affinity_timeout_s: int | None

    @classmethod
    def of(cls, target: ProbeTarget) -> TargetFacts:
        return cls(
            namespace=target.service.namespace,
            service=target.service.name,
            address=target.address,
            port=target.port.port,
            port_name=target.port.name,
            protocol=target.protocol.value,
            session_affinity=target.session_affinity,
            affinity_timeout_s=target.affinity_timeout_s,
        )


@dataclass(frozen=True, slots=True)
class FrozenEndpoints:
    """The endpoints a report is measured against: those current when the run ended and every one seen."""

    current: tuple[Backend, ...] = ()
    known: tuple[Backend, ...] = ()


@dataclass(frozen=True, slots=True)
class AttributionNote:
    mode: str  # rule | auto | fingerprint | none
    note: str
    rule: str | None = None  # the identity rule's label, if one was used


@dataclass(frozen=True, slots=True)
class RunStart:
    id: str
    created: float  # wall-clock time (epoch seconds)
    target: TargetFacts
    spec: Mapping[str, SpecValue]  # every field of the spec (``spec_fields``)
    total: int  # requests planned; 0 for an open-ended watch
    concurrency: int
    reuse: bool
    origin: str
    kind: str = Kind.RUN
    client_pod: str | None = None
    client_ip: str | None = None
    endpoints: FrozenEndpoints = FrozenEndpoints()


@dataclass(frozen=True, slots=True)
class Batch:
    """What a run produced since the last write; stored in one transaction."""

    outcomes: tuple[Outcome, ...] = ()
    seconds: tuple[Second, ...] = ()
    samples: Mapping[str, str] = field(default_factory=dict)  # added to those stored (first one per key wins)
    endpoints: FrozenEndpoints | None = None  # replaces the stored sets when given
    endpoints_changed: bool | None = None
    attribution: AttributionNote | None = None
    started: float | None = None  # wall-clock time of the first request

    @property
    def empty(self) -> bool:
        return self == NO_BATCH


NO_BATCH = Batch()


@dataclass(frozen=True, slots=True)
class RunEnd:
    status: str
    finished: float  # wall-clock time
    elapsed_s: float
    endpoints: FrozenEndpoints
    endpoints_changed: bool
    summary: Summary | None  # the report as the user saw it at the end (frozen: never recomputed)
    error: str | None = None
    first_reply_ms: float | None = None
    # Learnt while the run went (a probe pod's address comes with its first records): kept when None.
    client_ip: str | None = None


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A stored run without its per-request rows (what lists show)."""

    id: str
    kind: str
    created: float
    target: TargetFacts
    spec: Mapping[str, SpecValue]
    total: int
    concurrency: int
    reuse: bool
    origin: str
    client_pod: str | None
    client_ip: str | None
    status: str
    error: str | None
    started: float | None
    finished: float | None
    elapsed_s: float | None
    attribution: AttributionNote | None
    endpoints_changed: bool
    first_reply_ms: float | None
    outcomes_stored: int
    samples: Mapping[str, str]
    summary: Summary | None  # frozen at the end; its ``sequence`` is empty here (see ``StoredRun.summary``)

    @property
    def is_finished(self) -> bool:
        return self.status != Status.RUNNING

    def shape(self) -> RunShape:
        return RunShape(
            total=self.total,
            session_affinity=self.target.session_affinity,
            affinity_timeout_s=self.target.affinity_timeout_s,
            reuse=self.reuse,
            concurrency=self.concurrency,
            protocol=self.target.protocol,
            endpoints_changed=self.endpoints_changed,
            finished=self.is_finished,
        )


@dataclass(frozen=True, slots=True)
class StoredRun:
    record: RunRecord
    outcomes: tuple[Outcome, ...]  # in seq order, at most ``max_outcomes_per_run``
    endpoints: FrozenEndpoints

    @property
    def known(self) -> dict[str, Backend]:
        """Pod name -> its last seen endpoint (what a CSV export needs for ip and node)."""
        return {b.pod: b for b in (*self.endpoints.known, *self.endpoints.current) if b.pod is not None}

    def resummarize(self) -> Summary:
        """The summary computed again from the stored outcomes and the frozen endpoints (never today's)."""
        return summarize(self.outcomes, self.record.shape(), self.endpoints.current, self.endpoints.known)

    def summary(self) -> Summary:
        """The frozen summary with its per-request sequence; computed from the stored rows if none was frozen
        (a run still going, or one cut short before it ended)."""
        frozen = self.record.summary
        if frozen is None:
            return self.resummarize()
        return dataclasses.replace(frozen, sequence=sequence_of(self.outcomes))


def sequence_of(outcomes: Sequence[Outcome]) -> tuple[str | None, ...]:
    """Pod per request in seq order, ``"!kind"`` for errors, None when unattributed (as ``summarize``)."""
    return tuple(
        "!" + o.error if o.error is not None else o.pod for o in sorted(outcomes, key=lambda o: o.seq)
    )


@dataclass(frozen=True, slots=True)
class Missing:
    """Why a run id is not in the store; ``reason`` is shown to the user as is."""

    id: str
    reason: str
    since: float | None = None  # when it was deleted


@dataclass(frozen=True, slots=True)
class PageQuery:
    """Which stored runs a listing page shows: at most ``limit``, newest first, of one ``kind`` (None: every
    kind), of one Service when ``namespace`` and ``service`` are both given; ``before``: only runs older than
    that run (the previous page's ``RunPage.older``)."""

    limit: int = 50
    before: str | None = None
    namespace: str | None = None
    service: str | None = None
    kind: str | None = Kind.RUN


NEWEST = PageQuery()  # the first page of probe runs


@dataclass(frozen=True, slots=True)
class RunPage:
    """One page of stored runs, newest first; ``older`` is the cursor of the next page (None: the last)."""

    records: tuple[RunRecord, ...]
    older: str | None = None


@dataclass(frozen=True, slots=True)
class Interrupted:
    id: str
    done: int  # requests recorded
    total: int  # requests planned (0: open-ended)
    message: str


@dataclass(frozen=True, slots=True)
class Tombstone:
    id: str
    reason: str
    at: float
