"""A run's frozen ``Summary`` as JSON and back, exactly (floats round-trip through ``repr``).

The routing verdict (expected endpoints for the run's client beside what answered), what the server saw
(its source addresses beside the client's) and the ClientIP picks over time are optional keys: summaries
stored before they existed read back without them.

The per-request ``sequence`` is left out: it is as long as the run and follows from the stored outcomes
(``records.sequence_of``).
"""

from __future__ import annotations

import json
from typing import Any

from app.probe import repick
from app.probe.seen import Seen
from app.probe.stats import ChiSquare, PodStats, Summary
from app.routing import Routing


def encode_summary(s: Summary) -> str:
    data: dict[str, Any] = {
        "total": s.total,
        "done": s.done,
        "replies": s.replies,
        "attributed": s.attributed,
        "pods": [
            {
                "pod": p.pod,
                "ip": p.ip,
                "node": p.node,
                "hits": p.hits,
                "share": p.share,
                "expected_share": p.expected_share,
                "p50_ms": p.p50_ms,
                "p95_ms": p.p95_ms,
                "current": p.current,
            }
            for p in s.pods
        ],
        "unattributed": s.unattributed,
        "unattributed_reasons": [list(r) for r in s.unattributed_reasons],
        "errors": [list(e) for e in s.errors],
        "connections": s.connections,
        "latency_p50_ms": s.latency_p50_ms,
        "latency_p95_ms": s.latency_p95_ms,
        "chi_square": (
            [s.chi_square.statistic, s.chi_square.dof, s.chi_square.p_value] if s.chi_square else None
        ),
        "verdict": s.verdict,
        "explanations": list(s.explanations),
        "routing": _encode_routing(s.routing) if s.routing is not None else None,
        "seen": _encode_seen(s.seen) if s.seen is not None else None,
        "affinity": repick.to_json(s.affinity) if s.affinity is not None else None,
    }
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def decode_summary(text: str) -> Summary:
    d = json.loads(text)
    chi = d["chi_square"]
    return Summary(
        total=d["total"],
        done=d["done"],
        replies=d["replies"],
        attributed=d["attributed"],
        pods=tuple(PodStats(**p) for p in d["pods"]),
        unattributed=d["unattributed"],
        unattributed_reasons=tuple((r, n) for r, n in d["unattributed_reasons"]),
        errors=tuple((k, n) for k, n in d["errors"]),
        sequence=(),
        connections=d["connections"],
        latency_p50_ms=d["latency_p50_ms"],
        latency_p95_ms=d["latency_p95_ms"],
        chi_square=ChiSquare(chi[0], chi[1], chi[2]) if chi is not None else None,
        verdict=d["verdict"],
        explanations=tuple(d["explanations"]),
        routing=_decode_routing(d.get("routing")),
        seen=_decode_seen(d.get("seen")),
        affinity=repick.from_json(d.get("affinity")),
    )


def _encode_routing(r: Routing) -> dict[str, Any]:
    return {
        "client_node": r.client_node,
        "client_zone": r.client_zone,
        "fate": r.fate,
        "expected": list(r.expected),
        "reasons": list(r.reasons),
        "as_expected": r.as_expected,
        "lines": list(r.lines),
    }


def _decode_routing(d: Any) -> Routing | None:
    if not isinstance(d, dict):
        return None
    return Routing(
        client_node=d["client_node"],
        client_zone=d["client_zone"],
        fate=d["fate"],
        expected=tuple(d["expected"]),
        reasons=tuple(d["reasons"]),
        as_expected=bool(d["as_expected"]),
        lines=tuple(d["lines"]),
    )


def _encode_seen(s: Seen) -> dict[str, Any]:
    return {
        "client_ip": s.client_ip,
        "peers": [list(p) for p in s.peers],
        "other": s.other,
        "snat": s.snat,
        "note": s.note,
    }


def _decode_seen(d: Any) -> Seen | None:
    if not isinstance(d, dict):
        return None
    return Seen(
        client_ip=d["client_ip"],
        peers=tuple((str(a), int(n)) for a, n in d["peers"]),
        other=int(d["other"]),
        snat=d["snat"],
        note=str(d["note"]),
    )
