"""Routing diagnosis: tell stale Service rules apart from uneven balancing (pure).

kube-proxy programs a node's Service rules from the EndpointSlices on its own schedule; while it is down
or lagging, connections to the ClusterIP follow the rules of its last sync, and conntrack keeps sending
established flows to addresses that are gone. A probe run then sees a Ready endpoint that never answers
through the ClusterIP and requests that time out on an address that left the Service, and a uniformity
test over the current endpoints blames balancing for it. Two pieces of evidence tell the difference:

* the calibration probes each endpoint *directly* (pod IP, bypassing the Service rules); a pod that
  answers there but gets no request through the ClusterIP, over enough requests that a uniform spread
  would almost surely have reached it, is not in the rules the client's node applies;
* requests failed with no answer (timeout, refused, unreachable) while an address recently left the
  Service's endpoints: they were most likely sent to that old address.

:func:`diagnose` turns that evidence into a verdict and explanations; :func:`apply` puts them into a
:class:`~app.probe.stats.Summary`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from app.probe.stats import Summary

# A pod that a uniform spread of the attributed replies gives this many or more (expected) and that got
# none is not in the rules: with 3 endpoints, (2/3)**15 ≈ 0.2 % chance of zero hits by luck.
MIN_EXPECTED_MISSED = 5.0
NO_ANSWER_KINDS = frozenset({"timeout", "refused", "unreachable"})
REMOVAL_WINDOW_S = 180.0  # an address that left the Service this recently may still be in stale rules
DIRECT_OK = "ok"  # what the calibration records for a pod that answered its direct probe
STALE_RULES_VERDICT = (
    "no balancing verdict: the Service rules on the client's node look out of date "
    "(rules not yet programmed, or stale conntrack entries)"
)


@dataclass(frozen=True, slots=True)
class PodEvidence:
    pod: str
    hits: int
    ready: bool  # a current ready endpoint


@dataclass(frozen=True, slots=True)
class Removed:
    """A ready address that left the Service ``ago_s`` seconds before the diagnosis."""

    ip: str
    pod: str | None
    ago_s: float


@dataclass(frozen=True, slots=True)
class Evidence:
    pods: Sequence[PodEvidence]
    direct: Mapping[str, str]  # pod -> calibration outcome ("ok" when it answered its direct probe)
    errors: Mapping[str, int]  # failed requests by kind
    done: int  # requests finished (answered or failed)
    removed: Sequence[Removed] = ()
    unattributed: int = 0  # replies no pod could be named for
    session_affinity: str = "None"
    reuse: bool = False


@dataclass(frozen=True, slots=True)
class Diagnosis:
    verdict: str | None = None  # replaces the balancing verdict when the spread cannot be judged
    explanations: tuple[str, ...] = ()


def diagnose(ev: Evidence) -> Diagnosis:
    ready = [p for p in ev.pods if p.ready]
    # With ClientIP affinity or reused connections, pods without hits are expected: no evidence.
    judge_spread = ev.session_affinity != "ClientIP" and not ev.reuse and len(ready) >= 2
    unreached = []
    attributed = sum(p.hits for p in ev.pods)
    expected = attributed / len(ready) if ready else 0.0
    # Replies that could not be attributed may be that pod's: only judge when they could not hide it.
    if judge_spread and expected >= MIN_EXPECTED_MISSED and ev.unattributed < expected / 2:
        unreached = [p.pod for p in ready if p.hits == 0 and ev.direct.get(p.pod) == DIRECT_OK]
    failed = {kind: n for kind, n in ev.errors.items() if kind in NO_ANSWER_KINDS and n}
    removed = [r for r in ev.removed if r.ago_s <= REMOVAL_WINDOW_S]
    lost = sum(failed.values())
    explanations: list[str] = []
    if unreached:
        who = _names(unreached)
        explanations.append(
            f"{who} answered the direct probe (to the pod's own address) but got none of the {ev.done} "
            "requests sent through the ClusterIP: the Service rules on the client's node do not include "
            f"{'it' if len(unreached) == 1 else 'them'} yet."
        )
    if lost and removed:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(failed.items()))
        gone = "; ".join(
            f"{r.ip}{f' (pod {r.pod})' if r.pod else ''} {r.ago_s:.0f} s ago" for r in removed[:3]
        )
        explanations.append(
            f"{lost} of {ev.done} requests got no answer ({kinds}) while {len(removed)} address(es) had "
            f"recently left the Service's endpoints ({gone}): those requests most likely went to an old "
            "address that stale rules or conntrack entries still send connections to."
        )
    if not explanations:
        return Diagnosis()
    explanations.append(
        "kube-proxy (or the node's Service proxy) is down or behind on the client's node: its rules lag "
        "the EndpointSlices shown here. Check it (e.g. its log and sync metrics); a later run will show "
        "the real spread once its rules catch up."
    )
    return Diagnosis(STALE_RULES_VERDICT if unreached else None, tuple(explanations))


def apply(summary: Summary, diagnosis: Diagnosis) -> Summary:
    """The summary with the diagnosis: its explanations first, and its verdict when it has one."""
    if not diagnosis.explanations:
        return summary
    return dataclasses.replace(
        summary,
        verdict=diagnosis.verdict or summary.verdict,
        chi_square=None if diagnosis.verdict else summary.chi_square,
        explanations=(*diagnosis.explanations, *summary.explanations),
    )


def evidence_of(
    summary: Summary,
    direct: Mapping[str, str],
    removed: Sequence[Removed],
    *,
    session_affinity: str,
    reuse: bool,
) -> Evidence:
    return Evidence(
        pods=[PodEvidence(p.pod, p.hits, p.current) for p in summary.pods],
        direct=direct,
        errors=dict(summary.errors),
        done=summary.done,
        removed=removed,
        unattributed=summary.unattributed,
        session_affinity=session_affinity,
        reuse=reuse,
    )


def _names(pods: Sequence[str]) -> str:
    if len(pods) == 1:
        return f"Pod {pods[0]}"
    return "Pods " + ", ".join(pods[:-1]) + f" and {pods[-1]}"
