"""Stale Service rules told apart from uneven balancing: a table of evidence -> diagnosis."""

from __future__ import annotations

import pytest

from app.probe.diagnosis import (
    STALE_RULES_VERDICT,
    Evidence,
    PodEvidence,
    Removed,
    apply,
    diagnose,
    evidence_of,
)
from app.probe.stats import Outcome, RunShape, summarize
from app.probe.targets import Backend

OK3 = {"p1": "ok", "p2": "ok", "p3": "ok"}


def pods(*hits: int, ready: bool = True) -> list[PodEvidence]:
    return [PodEvidence(f"p{i}", h, ready) for i, h in enumerate(hits, start=1)]


CASES = [
    pytest.param(
        # What the fault showed: kube-proxy down, p3 replaced an old pod; 37 % timeouts, the new pod 0 hits.
        Evidence(pods(95, 94, 0), OK3, {"timeout": 111}, 300, [Removed("198.18.0.9", "old", 20.0)]),
        STALE_RULES_VERDICT,
        [
            "Pod p3 answered the direct probe",
            "111 of 300 requests got no answer (111 timeout)",
            "198.18.0.9 (pod old) 20 s ago",
        ],
        id="new-pod-unreached-and-timeouts-to-removed-address",
    ),
    pytest.param(
        Evidence(pods(150, 150, 0), OK3, {}, 300),
        STALE_RULES_VERDICT,
        ["Pod p3 answered the direct probe", "got none of the 300 requests", "do not include it yet"],
        id="unreached-only",
    ),
    pytest.param(
        Evidence(pods(100, 0, 0), OK3, {}, 300),
        STALE_RULES_VERDICT,
        ["Pods p2 and p3 answered", "do not include them yet"],
        id="two-unreached",
    ),
    pytest.param(
        Evidence(pods(90, 100, 90), OK3, {"timeout": 20}, 300, [Removed("198.18.0.9", None, 30.0)]),
        None,
        ["20 of 300 requests got no answer (20 timeout)", "198.18.0.9 30 s ago"],
        id="timeouts-after-removal-only-keeps-the-verdict",
    ),
    pytest.param(
        Evidence(pods(100, 100, 100), OK3, {"timeout": 5}, 300),
        None,
        [],
        id="timeouts-without-removal-no-hint",
    ),
    pytest.param(
        Evidence(pods(90, 100, 90), OK3, {"timeout": 20}, 300, [Removed("198.18.0.9", None, 600.0)]),
        None,
        [],
        id="removal-too-long-ago",
    ),
    pytest.param(
        Evidence(pods(150, 150, 0), {"p1": "ok", "p2": "ok", "p3": "direct probe failed: timeout"}, {}, 300),
        None,
        [],
        id="pod-also-silent-directly-is-not-a-rules-problem",
    ),
    pytest.param(
        Evidence(pods(6, 6, 0), OK3, {}, 12),
        None,
        [],
        id="too-few-requests-to-tell",
    ),
    pytest.param(
        Evidence(pods(100, 100, 0), OK3, {}, 300, unattributed=100),
        None,
        [],
        id="unattributed-replies-may-be-the-silent-pods",
    ),
    pytest.param(
        Evidence(pods(120, 120, 0), OK3, {}, 250, unattributed=10),
        STALE_RULES_VERDICT,
        ["Pod p3"],
        id="a-few-unattributed-replies-cannot-hide-a-pod",
    ),
    pytest.param(
        Evidence(pods(300, 0, 0), OK3, {}, 300, session_affinity="ClientIP"),
        None,
        [],
        id="client-ip-affinity-expects-one-pod",
    ),
    pytest.param(
        Evidence(pods(300, 0, 0), OK3, {}, 300, reuse=True),
        None,
        [],
        id="reused-connection-expects-one-pod",
    ),
    pytest.param(
        Evidence(pods(150, 150, 0), {}, {}, 300),
        None,
        [],
        id="no-calibration-no-evidence",
    ),
    pytest.param(
        Evidence([*pods(150, 150), PodEvidence("gone", 0, False)], OK3 | {"gone": "ok"}, {}, 300),
        None,
        [],
        id="a-pod-no-longer-ready-is-not-expected",
    ),
]


@pytest.mark.parametrize(("evidence", "verdict", "phrases"), CASES)
def test_diagnose(evidence, verdict, phrases):
    got = diagnose(evidence)
    assert got.verdict == verdict
    text = " ".join(got.explanations)
    for phrase in phrases:
        assert phrase in text
    assert bool(got.explanations) == bool(phrases)
    if got.explanations:
        assert "kube-proxy" in got.explanations[-1]


def test_apply_puts_the_diagnosis_into_the_summary():
    backends = [Backend(f"p{i}", f"198.18.0.{i}", 8080, "n", True, True, False) for i in (1, 2, 3)]
    outcomes = [Outcome(i, f"p{1 + i % 2}", None, 1.0) for i in range(1, 201)]
    outcomes += [Outcome(i, None, "timeout", None) for i in range(201, 301)]
    shape = RunShape(300, "None", None, False, 1, "HTTP", finished=True)
    summary = summarize(outcomes, shape, backends)
    assert summary.verdict.startswith("not uniform")  # what the balancing test alone would say
    removed = [Removed("198.18.0.9", "old", 12.0)]
    diagnosed = apply(
        summary, diagnose(evidence_of(summary, OK3, removed, session_affinity="None", reuse=False))
    )
    assert diagnosed.verdict == STALE_RULES_VERDICT and diagnosed.chi_square is None
    assert diagnosed.explanations[0].startswith("Pod p3 answered the direct probe")
    assert diagnosed.pods == summary.pods  # the counts stay as measured
    assert (
        apply(summary, diagnose(evidence_of(summary, {}, [], session_affinity="None", reuse=False)))
        is summary
    )
