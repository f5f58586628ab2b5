"""Many clients at once on one Service: one probe pod per node ("from every node") or K probe pods ("many
clients", K distinct source IPs), read together as a client-by-pod matrix.

Each client is an ordinary probe-pod run (its own pod, its own live results, its own cleanup). What a
row expects and its verdict are that run's own: kube-proxy's rules for the client's node
(``app.routing.expect``) judged against what answered (``app.routing.judge``). This module only decides
which clients to start and groups their runs into rows and columns. Pure: no web, no Kubernetes client.
"""

from __future__ import annotations

import enum
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from app.domain import Node, Origin
from app.probe.run import Run, RunStatus
from app.probe.spec import ProbeSpec, SpecError
from app.routing import Routing

KEPT = 32  # fan-outs remembered (their runs are kept like any other run)


class Mode(enum.StrEnum):
    NODES = "nodes"  # one probe pod pinned to each Ready, schedulable node
    CLIENTS = "clients"  # K probe pods wherever the scheduler puts them: K source IPs


class RowState(enum.StrEnum):
    RUNNING = "running"
    AS_EXPECTED = "as expected"
    DROPPED = "dropped as expected"
    DIFFERS = "differs"
    FAILED = "failed"  # the client could not run (or the run ended without a report)
    UNJUDGED = "unjudged"  # the client's node is unknown: no expectation


@dataclass(frozen=True, slots=True)
class Skipped:
    """A node that gets no probe pod, and why."""

    node: str
    reason: str


def client_nodes(nodes: Iterable[Node]) -> tuple[tuple[str, ...], tuple[Skipped, ...]]:
    """The nodes a probe pod is pinned to (Ready and schedulable), and the others with the reason."""
    chosen: list[str] = []
    skipped: list[Skipped] = []
    for node in sorted(nodes, key=lambda n: n.name):
        if not node.ready:
            skipped.append(Skipped(node.name, "not Ready"))
        elif node.unschedulable:
            skipped.append(Skipped(node.name, "cordoned (spec.unschedulable)"))
        else:
            chosen.append(node.name)
    return tuple(chosen), tuple(skipped)


def member_specs(
    base: ProbeSpec, mode: Mode, *, nodes: Sequence[str] = (), clients: int = 0, most: int
) -> list[ProbeSpec]:
    """One probe-pod spec per client: pinned to each node, or ``clients`` unpinned ones (1 ≤ K ≤ most)."""
    base = replace(base, origin=Origin.PROBE_POD, concurrency=1, node=None)
    if mode is Mode.NODES:
        if not nodes:
            raise SpecError("no Ready, schedulable node to run a probe pod on")
        if len(nodes) > most:
            raise SpecError(
                f"{len(nodes)} nodes, more than the {most} probe pods one fan-out may start "
                "(SVCSCOPE_PROBE_FANOUT_MAX_CLIENTS)"
            )
        return [replace(base, node=n) for n in nodes]
    if not 1 <= clients <= most:
        raise SpecError(f"clients must be between 1 and {most} (SVCSCOPE_PROBE_FANOUT_MAX_CLIENTS)")
    return [base] * clients


@dataclass(frozen=True, slots=True)
class Fanout:
    """What was started: the runs (one per client, in row order) and the nodes left out."""

    id: str
    mode: Mode
    spec: ProbeSpec  # the members' common spec (without a node)
    run_ids: tuple[str, ...]
    skipped: tuple[Skipped, ...] = ()
    created: float = field(default_factory=time.time)


class FanoutBook:
    """The recent fan-outs of this process, newest last; the oldest go first beyond ``size``."""

    def __init__(self, size: int = KEPT) -> None:
        self.size = size
        self._items: OrderedDict[str, Fanout] = OrderedDict()

    def add(self, fanout: Fanout) -> None:
        self._items[fanout.id] = fanout
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def get(self, fanout_id: str) -> Fanout | None:
        return self._items.get(fanout_id)


@dataclass(frozen=True, slots=True)
class Observation:
    """One client's run as the matrix needs it (None for a run that is no longer kept)."""

    run_id: str
    status: str  # a RunStatus value
    error: str | None
    client_pod: str | None
    client_ip: str | None
    client_node: str | None
    done: int
    total: int
    hits: Mapping[str, int]  # pod -> answers
    errors: Mapping[str, int]  # error kind -> count
    routing: Routing | None
    pod_nodes: Mapping[str, str | None]  # every endpoint pod the run saw -> its node
    # Replies no pod could be named for, and the commonest reason: they are neither hits nor errors.
    unattributed: int = 0
    unattributed_reason: str | None = None


def observation_of(run: Run) -> Observation:
    s = run.summary()
    return Observation(
        run_id=run.id,
        status=run.status.value,
        error=run.error,
        client_pod=run.client_pod,
        client_ip=run.client_ip,
        client_node=run.client_node or run.spec.node,
        done=s.done,
        total=s.total,
        hits={p.pod: p.hits for p in s.pods if p.hits},
        errors=dict(s.errors),
        routing=s.routing,
        pod_nodes={**{name: b.node for name, b in run.known.items()}, **{p.pod: p.node for p in s.pods}},
        unattributed=s.unattributed,
        unattributed_reason=s.unattributed_reasons[0][0] if s.unattributed_reasons else None,
    )


def missing(run_id: str, reason: str) -> Observation:
    """The row of a run that cannot be read any more."""
    return Observation(run_id, RunStatus.FAILED.value, reason, None, None, None, 0, 0, {}, {}, None, {})


@dataclass(frozen=True, slots=True)
class Column:
    pod: str
    node: str | None
    zone: str | None


@dataclass(frozen=True, slots=True)
class Row:
    label: str  # the node (every node) or "client i" (many clients)
    obs: Observation
    zone: str | None
    cells: tuple[int, ...]  # hits per column
    expected: tuple[str, ...]  # the pods kube-proxy on the client's node may pick
    fate: str | None  # routed, dropped, rejected, unknown (None: not judged yet)
    state: RowState
    lines: tuple[str, ...]  # the verdict or the error, in words
    pods_used: int

    @property
    def stuck(self) -> bool:
        """One client, exactly one pod: what ClientIP affinity promises."""
        return self.pods_used == 1


@dataclass(frozen=True, slots=True)
class Matrix:
    mode: Mode
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    error_kinds: tuple[str, ...]
    skipped: tuple[Skipped, ...]
    finished: bool
    as_expected: bool | None  # None while a client still runs
    lines: tuple[str, ...]  # the overall verdict in words
    client_ip_affinity: bool
    distinct_pods: int  # pods that answered any client
    stuck_clients: int  # clients that every answer came from one pod for


FINISHED = frozenset(s.value for s in RunStatus if s is not RunStatus.RUNNING)


def matrix(
    fanout: Fanout,
    observations: Sequence[Observation],
    zones: Mapping[str, str | None],
    *,
    client_ip_affinity: bool,
) -> Matrix:
    """Rows (clients, in the fan-out's order) by columns (every pod that answered or was expected, by zone,
    node and name), each row judged, and the verdict over all of them. ``zones``: node -> zone label."""
    pod_nodes: dict[str, str | None] = {}
    for obs in observations:
        pod_nodes.update(obs.pod_nodes)
    names: set[str] = set()
    for obs in observations:
        names.update(obs.hits)
        if obs.routing is not None:
            names.update(obs.routing.expected)
    columns = tuple(
        sorted(
            (Column(p, pod_nodes.get(p), zones.get(pod_nodes.get(p) or "")) for p in names),
            key=lambda c: (c.zone or "~", c.node or "~", c.pod),
        )
    )
    rows = tuple(_row(fanout, i, obs, columns, zones) for i, obs in enumerate(observations, start=1))
    kinds = tuple(sorted({k for obs in observations for k in obs.errors}))
    finished = all(r.obs.status in FINISHED for r in rows)
    used = {p for r in rows for p, n in r.obs.hits.items() if n}
    stuck = sum(1 for r in rows if r.stuck)
    as_expected, lines = _overall(rows, finished, client_ip_affinity, len(used), stuck)
    return Matrix(
        fanout.mode,
        columns,
        rows,
        kinds,
        fanout.skipped,
        finished,
        as_expected,
        lines,
        client_ip_affinity,
        len(used),
        stuck,
    )


def _row(
    fanout: Fanout, index: int, obs: Observation, columns: Sequence[Column], zones: Mapping[str, str | None]
) -> Row:
    routing = obs.routing
    node = obs.client_node
    label = (node or "?") if fanout.mode is Mode.NODES else f"client {index}"
    zone = routing.client_zone if routing is not None and routing.client_zone is not None else None
    if zone is None and node is not None:
        zone = zones.get(node)
    cells = tuple(obs.hits.get(c.pod, 0) for c in columns)
    expected = routing.expected if routing is not None else ()
    fate = routing.fate if routing is not None else None
    used = sum(1 for n in obs.hits.values() if n)
    state, lines = _judged(obs)
    return Row(label, obs, zone, cells, expected, fate, state, lines, used)


def _judged(obs: Observation) -> tuple[RowState, tuple[str, ...]]:
    routing = obs.routing
    if obs.status == RunStatus.RUNNING.value:
        return RowState.RUNNING, (f"{obs.done}/{obs.total} requests so far",)
    if obs.status != RunStatus.DONE.value:
        # The client never ran (a node that cannot start the pod, RBAC, ...) or was cut short.
        return RowState.FAILED, (f"{obs.status}: {obs.error or 'no report'}",)
    if routing is None:
        return RowState.UNJUDGED, ("no expectation: the client's node is not known",)
    if routing.as_expected:
        state = RowState.DROPPED if routing.fate == "dropped" else RowState.AS_EXPECTED
        return state, routing.lines
    if obs.unattributed:
        # Otherwise a row of replies that named no pod reads "nothing answered".
        said = f"{obs.unattributed} of {obs.done} replies named no endpoint: {obs.unattributed_reason}"
        return RowState.DIFFERS, (*routing.lines, said)
    return RowState.DIFFERS, routing.lines


def _overall(
    rows: Sequence[Row], finished: bool, affinity: bool, distinct: int, stuck: int
) -> tuple[bool | None, tuple[str, ...]]:
    if not rows:
        return False, ("no client ran",)
    if not finished:
        running = sum(1 for r in rows if r.state is RowState.RUNNING)
        return None, (f"{len(rows) - running} of {len(rows)} clients finished",)
    lines: list[str] = []
    for r in rows:
        if r.state not in (RowState.AS_EXPECTED, RowState.DROPPED):
            lines.extend(f"{r.label}: {line}" for line in r.lines)
    if affinity:
        sticky = f"ClientIP: {stuck} of {len(rows)} clients stuck to exactly one pod"
        sticky += f"; {distinct} distinct pod(s) used"
        if lines:
            return False, (sticky, *lines)
        return True, (sticky,)
    if lines:
        return False, tuple(lines)
    return True, (f"as expected for all {len(rows)} clients",)
