"""The store as the probe runner's sink, and stored runs read back as probe runs.

``store_sinks(store)`` is the runner's ``SinkFactory``: it records a run's start, hands every result to a
``RunRecorder`` and records the frozen end. ``restored`` turns a ``StoredRun`` (or a ``RunRecord``: a
list entry without results) back into a finished ``Run``, so the pages and the JSON show a stored run
exactly as the running process showed it when it ended.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping

from app.domain import ObjectKey, Origin, Protocol, ServicePort
from app.probe.attribution import Rule
from app.probe.run import AttributionMode, Calibration, Run, RunStatus
from app.probe.sink import NullSink, RunSink, SinkFactory
from app.probe.spec import ProbeSpec
from app.probe.stats import Outcome, summarize
from app.probe.targets import Backend, ProbeProtocol, ProbeTarget
from app.store.aio import AsyncRunStore, RunRecorder
from app.store.db import StoreError
from app.store.records import (
    AttributionNote,
    FrozenEndpoints,
    RunEnd,
    RunRecord,
    RunStart,
    SpecValue,
    StoredRun,
    TargetFacts,
    spec_fields,
)

log = logging.getLogger(__name__)


class StoreSink:
    """One run's results on their way to the store (see ``RunRecorder``)."""

    def __init__(self, recorder: RunRecorder) -> None:
        self.recorder = recorder

    @property
    def saved(self) -> bool:
        return self.recorder.failed is None

    def add(self, outcome: Outcome, sample: tuple[str, str] | None) -> None:
        self.recorder.add(outcome, sample)

    def note_endpoints(self, current: tuple[Backend, ...], known: tuple[Backend, ...], changed: bool) -> None:
        self.recorder.note_endpoints(FrozenEndpoints(current, known), changed)

    def note_attribution(self, mode: str, note: str, rule: str | None) -> None:
        self.recorder.note_attribution(AttributionNote(mode, note, rule))

    def note_started(self, wall_time: float) -> None:
        self.recorder.note_started(wall_time)

    async def close(self, run: Run) -> None:
        await self.recorder.finish(end_of(run))


class UnsavedSink(NullSink):
    """A run whose start could not be recorded: it runs anyway, kept in memory only."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def store_sinks(store: AsyncRunStore) -> SinkFactory:
    async def open_sink(run: Run) -> RunSink:
        try:
            await store.begin(start_of(run))
        except StoreError as exc:
            log.error("probe run %s is not saved: %s", run.id, exc.message)
            return UnsavedSink(exc.message)
        recorder = RunRecorder(store, run.id, timeout_s=run.spec.timeout_s)
        recorder.start()
        return StoreSink(recorder)

    return open_sink


def start_of(run: Run) -> RunStart:
    spec = run.spec
    return RunStart(
        id=run.id,
        created=run.created,
        target=TargetFacts.of(run.target),
        spec=spec_fields(spec),
        total=spec.count,
        concurrency=spec.concurrency,
        reuse=spec.reuse,
        origin=spec.origin.value,
        client_pod=run.client_pod,
        client_ip=run.client_ip,
        endpoints=FrozenEndpoints(run.current(), tuple(run.known.values())),
    )


def end_of(run: Run) -> RunEnd:
    return RunEnd(
        status=run.status.value,
        finished=time.time(),
        elapsed_s=run.elapsed_s,
        endpoints=FrozenEndpoints(run.current(), tuple(run.known.values())),
        endpoints_changed=run.endpoints_changed,
        summary=run.final,
        error=run.error,
        first_reply_ms=run.first_reply_ms,
        client_ip=run.client_ip,
    )


# -- reading back -------------------------------------------------------------------------------


def restored(found: StoredRun | RunRecord) -> Run:
    """A stored run as a finished ``Run``; from a ``RunRecord`` without its results (``complete`` False)."""
    if isinstance(found, StoredRun):
        record, outcomes, endpoints = found.record, list(found.outcomes), found.endpoints
        summary = found.summary()
        complete = record.outcomes_stored >= len(outcomes) and len(outcomes) == summary.done
    else:
        record, outcomes, endpoints = found, [], FrozenEndpoints()
        summary = record.summary or summarize((), record.shape(), ())
        complete = False
    spec = spec_of(record.spec, record.target)
    target = target_of(record.target)
    attribution = record.attribution or AttributionNote(AttributionMode.NONE.value, "")
    calibration = Calibration(mode=_mode(attribution.mode), note=attribution.note)
    known = {b.pod: b for b in (*endpoints.known, *endpoints.current) if b.pod is not None}
    return Run.restored(
        record.id,
        spec,
        target,
        rule=_rule(attribution.rule),
        created=record.created,
        status=_status(record.status),
        error=record.error,
        elapsed_s=record.elapsed_s or 0.0,
        results=outcomes,
        complete=complete,
        summary=summary,
        current=endpoints.current,
        known=known,
        endpoints_changed=record.endpoints_changed,
        calibration=calibration,
        samples=dict(record.samples),
        first_reply_ms=record.first_reply_ms,
        client_pod=record.client_pod,
        client_ip=record.client_ip,
    )


def spec_of(values: Mapping[str, SpecValue], target: TargetFacts) -> ProbeSpec:
    """The spec as stored (fields this version does not know are ignored; missing ones default)."""
    names = {f.name for f in dataclasses.fields(ProbeSpec)}
    fields: dict[str, object] = {k: v for k, v in values.items() if k in names}
    fields.setdefault("namespace", target.namespace)
    fields.setdefault("service", target.service)
    fields.setdefault("port", target.port_name or str(target.port))
    fields["protocol"] = ProbeProtocol(str(fields.get("protocol", target.protocol)))
    fields["origin"] = Origin(str(fields.get("origin", Origin.DASHBOARD.value)))
    return ProbeSpec(**fields)  # type: ignore[arg-type]


def target_of(t: TargetFacts) -> ProbeTarget:
    protocol = ProbeProtocol(t.protocol)
    return ProbeTarget(
        service=ObjectKey(t.namespace, t.service),
        address=t.address,
        port=ServicePort(
            t.port_name, t.port, t.port, Protocol.UDP if protocol is ProbeProtocol.UDP else Protocol.TCP
        ),
        protocol=protocol,
        session_affinity=t.session_affinity,
        affinity_timeout_s=t.affinity_timeout_s,
        identity_annotation=None,
    )


def _status(value: str) -> RunStatus:
    try:
        return RunStatus(value)
    except ValueError:
        return RunStatus.FAILED


def _mode(value: str) -> AttributionMode:
    try:
        return AttributionMode(value)
    except ValueError:
        return AttributionMode.NONE


def _rule(label: str | None) -> Rule | None:
    """The rule as shown (its label); a restored run never attributes again, so nothing is compiled."""
    if not label:
        return None
    kind, _, expr = label.partition(":")
    return Rule(kind, expr)
