"""The probe API's JSON shapes, as pydantic models (so OpenAPI documents them): a run, a comparison."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, Field

from app.probe import repick
from app.probe.compare import Comparison, RunSnapshot
from app.probe.run import Run
from app.probe.seen import Seen
from app.probe.stats import Summary
from app.routing import Routing


def _ms(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


class ServiceRef(BaseModel):
    namespace: str
    name: str


class TargetOut(BaseModel):
    address: str
    port: int
    port_name: str | None
    protocol: str
    session_affinity: str
    affinity_timeout_s: int | None


class SpecOut(BaseModel):
    count: int
    concurrency: int
    reuse: bool
    method: str
    path: str
    timeout_s: float
    identity: str | None
    origin: str
    exec_pod: str | None
    exec_namespace: str | None
    exec_container: str | None
    node: str | None
    interval_s: float = 0.0
    pause_after: int = 0
    pause_s: float = 0.0


class RoutingOut(BaseModel):
    client_node: str | None
    client_zone: str | None
    fate: str = Field(description="routed, dropped, rejected or unknown")
    expected: list[str]
    reasons: list[str]
    as_expected: bool
    verdict: list[str]

    @classmethod
    def of(cls, r: Routing) -> RoutingOut:
        return cls(
            client_node=r.client_node,
            client_zone=r.client_zone,
            fate=r.fate,
            expected=list(r.expected),
            reasons=list(r.reasons),
            as_expected=r.as_expected,
            verdict=list(r.lines),
        )


class ClientOut(BaseModel):
    pod: str | None = Field(description="the client kube-proxy sees, when known")
    ip: str | None
    node: str | None = Field(default=None, description="its node, whose kube-proxy the requests meet")


class PeerOut(BaseModel):
    address: str
    replies: int


class SeenOut(BaseModel):
    """The source address the server reported beside the client's own; ``snat`` when they differ."""

    client_ip: str | None
    peers: list[PeerOut] = Field(description="source addresses the replies report, most replies first")
    other: int = Field(description="replies with an address beyond the first 16 distinct ones")
    snat: bool | None = Field(description="the server saw another source than the client (None: unknown)")
    note: str

    @classmethod
    def of(cls, s: Seen) -> SeenOut:
        peers = [PeerOut(address=a, replies=n) for a, n in s.peers]
        return cls(client_ip=s.client_ip, peers=peers, other=s.other, snat=s.snat, note=s.note)


class AttributionOut(BaseModel):
    mode: str = Field(description="rule, auto, fingerprint or none")
    note: str
    rule: str | None


class Quantiles(BaseModel):
    p50: float | None
    p95: float | None


class PodHitsOut(BaseModel):
    pod: str
    ip: str | None
    node: str | None
    hits: int
    share: float
    expected_share: float | None
    latency_ms: Quantiles
    current: bool = Field(description="still a ready endpoint")


class ReasonCount(BaseModel):
    reason: str
    count: int


class UnattributedOut(BaseModel):
    count: int
    reasons: list[ReasonCount]


class ChiSquareOut(BaseModel):
    statistic: float
    dof: int
    p_value: float


class RunOut(BaseModel):
    """A probe run: status, per-pod hits/share/expected share/latency, unattributed, errors, verdict."""

    id: str
    status: str
    error: str | None
    waiting: str | None = Field(
        default=None, description='what a running run waits for, e.g. "waiting for the apiserver (...)"'
    )
    created: str
    elapsed_s: float
    service: ServiceRef
    target: TargetOut
    spec: SpecOut
    client: ClientOut
    attribution: AttributionOut
    total: int
    done: int
    replies: int
    attributed: int
    pods: list[PodHitsOut]
    unattributed: UnattributedOut
    errors: dict[str, int]
    connections: int
    latency_ms: Quantiles
    first_reply_ms: float | None
    chi_square: ChiSquareOut | None
    verdict: str
    explanations: list[str]
    routing: RoutingOut | None = Field(
        default=None, description="expected endpoints for the client's node against what answered"
    )
    seen: SeenOut | None = Field(default=None, description="what the server saw: source address, SNAT")
    affinity: dict[str, Any] | None = Field(
        default=None,
        description="ClientIP: the client's picks over time, fresh picks after idle gaps longer than the "
        "timeout, unexpected changes, and the story in words (lines)",
    )
    endpoints_changed: bool
    samples: dict[str, str]

    @classmethod
    def of(cls, run: Run, s: Summary) -> RunOut:
        return cls(**_run_fields(run, s))


class RunDetailOut(RunOut):
    sequence: list[str | None] = Field(description="the pod per request, in order; '!kind' for errors")

    @classmethod
    def of(cls, run: Run, s: Summary) -> RunDetailOut:
        return cls(**_run_fields(run, s), sequence=list(s.sequence))


def _run_fields(run: Run, s: Summary) -> dict[str, object]:
    spec, target = run.spec, run.target
    return {
        "id": run.id,
        "status": run.status.value,
        "error": run.error,
        "waiting": run.waiting if not run.finished else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(run.created)),
        "elapsed_s": round(run.elapsed_s, 3),
        "service": ServiceRef(namespace=spec.namespace, name=spec.service),
        "target": TargetOut(
            address=target.address,
            port=target.port.port,
            port_name=target.port.name,
            protocol=spec.protocol.value,
            session_affinity=target.session_affinity,
            affinity_timeout_s=target.affinity_timeout_s,
        ),
        "spec": SpecOut(
            count=spec.count,
            concurrency=spec.concurrency,
            reuse=spec.reuse,
            method=spec.method,
            path=spec.path,
            timeout_s=spec.timeout_s,
            identity=spec.identity,
            origin=spec.origin.value,
            exec_pod=spec.exec_pod,
            exec_namespace=spec.exec_in if spec.exec_pod else None,
            exec_container=spec.exec_container,
            node=spec.node,
            interval_s=spec.interval_s,
            pause_after=spec.pause_after,
            pause_s=spec.pause_s,
        ),
        "client": ClientOut(pod=run.client_pod, ip=run.client_ip, node=run.client_node),
        "attribution": AttributionOut(
            mode=run.calibration.mode.value,
            note=run.calibration.note,
            rule=run.rule.label if run.rule else None,
        ),
        "total": s.total,
        "done": s.done,
        "replies": s.replies,
        "attributed": s.attributed,
        "pods": [
            PodHitsOut(
                pod=p.pod,
                ip=p.ip,
                node=p.node,
                hits=p.hits,
                share=round(p.share, 6),
                expected_share=round(p.expected_share, 6) if p.expected_share is not None else None,
                latency_ms=Quantiles(p50=_ms(p.p50_ms), p95=_ms(p.p95_ms)),
                current=p.current,
            )
            for p in s.pods
        ],
        "unattributed": UnattributedOut(
            count=s.unattributed,
            reasons=[ReasonCount(reason=r, count=n) for r, n in s.unattributed_reasons],
        ),
        "errors": dict(s.errors),
        "connections": s.connections,
        "latency_ms": Quantiles(p50=_ms(s.latency_p50_ms), p95=_ms(s.latency_p95_ms)),
        "first_reply_ms": _ms(run.first_reply_ms),
        "chi_square": (
            ChiSquareOut(statistic=s.chi_square.statistic, dof=s.chi_square.dof, p_value=s.chi_square.p_value)
            if s.chi_square
            else None
        ),
        "verdict": s.verdict,
        "explanations": list(s.explanations),
        "routing": RoutingOut.of(s.routing) if s.routing is not None else None,
        "seen": SeenOut.of(s.seen) if s.seen is not None else None,
        "affinity": repick.to_json(s.affinity) if s.affinity is not None else None,
        "endpoints_changed": run.endpoints_changed,
        "samples": dict(run.samples),
    }


class CancelOut(BaseModel):
    id: str
    cancelled: bool = Field(description="false when the run had already ended")
    status: str


# -- comparison -------------------------------------------------------------------------------


class SnapshotOut(BaseModel):
    id: str
    url: str
    service: ServiceRef
    port: str
    protocol: str
    origin: str
    client: ClientOut
    count: int
    done: int
    reuse: bool
    status: str
    session_affinity: str
    distribution: str
    unattributed: int
    errors: int
    verdict: str
    routing: RoutingOut | None = Field(
        default=None, description="expected endpoints for the run's client against what answered"
    )

    @classmethod
    def of(cls, r: RunSnapshot) -> SnapshotOut:
        return cls(
            id=r.id,
            url=f"/runs/{r.id}",
            service=ServiceRef(namespace=r.namespace, name=r.service),
            port=r.port,
            protocol=r.protocol,
            origin=r.origin,
            client=ClientOut(pod=r.client_pod, ip=r.client_ip, node=r.client_node),
            count=r.count,
            done=r.done,
            reuse=r.reuse,
            status=r.status,
            session_affinity=r.session_affinity,
            distribution=r.distribution,
            unattributed=r.unattributed,
            errors=r.errors,
            verdict=r.verdict,
            routing=RoutingOut.of(r.routing) if r.routing is not None else None,
        )


class ShareOut(BaseModel):
    hits: int
    share: float
    expected_share: float | None


class ComparedPodOut(BaseModel):
    pod: str
    runs: list[ShareOut | None] = Field(description="one per run; null: the pod was no endpoint of that run")


class ComparisonOut(BaseModel):
    runs: list[SnapshotOut]
    pods: list[ComparedPodOut]
    notes: list[str]

    @classmethod
    def of(cls, c: Comparison) -> ComparisonOut:
        return cls(
            runs=[SnapshotOut.of(r) for r in c.runs],
            pods=[
                ComparedPodOut(
                    pod=row.pod,
                    runs=[
                        None
                        if cell is None
                        else ShareOut(
                            hits=cell.hits,
                            share=round(cell.share, 6),
                            expected_share=(
                                round(cell.expected_share, 6) if cell.expected_share is not None else None
                            ),
                        )
                        for cell in row.cells
                    ],
                )
                for row in c.rows
            ],
            notes=list(c.notes),
        )
