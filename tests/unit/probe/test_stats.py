from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from app.probe.stats import (
    Outcome,
    RunShape,
    chi2_sf,
    chi_square_uniform,
    gamma_q,
    quantile,
    summarize,
)
from app.probe.targets import Backend

XS = [0.0, 0.01, 0.5, 1.0, 2.5, 3.841458820694124, 7.0, 15.0, 40.0, 120.0]


def _closed_form(x: float, dof: int) -> float:
    if dof == 1:
        return math.erfc(math.sqrt(x / 2))
    if dof == 2:
        return math.exp(-x / 2)
    if dof == 3:
        return math.erfc(math.sqrt(x / 2)) + math.sqrt(2 * x / math.pi) * math.exp(-x / 2)
    if dof == 4:
        return math.exp(-x / 2) * (1 + x / 2)
    raise AssertionError(dof)


@pytest.mark.parametrize("dof", [1, 2, 3, 4])
@pytest.mark.parametrize("x", XS)
def test_chi2_sf_matches_closed_forms(x: float, dof: int) -> None:
    assert chi2_sf(x, dof) == pytest.approx(_closed_form(x, dof), rel=1e-9, abs=1e-300)


def test_chi2_sf_known_quantiles() -> None:
    assert chi2_sf(3.841458820694124, 1) == pytest.approx(0.05, rel=1e-9)
    assert chi2_sf(11.070497693516351, 5) == pytest.approx(0.05, rel=1e-9)
    assert chi2_sf(16.26623619623813, 3) == pytest.approx(0.001, rel=1e-8)
    assert chi2_sf(1e6, 10) == 0.0


def test_gamma_q_edges() -> None:
    assert gamma_q(1.0, 0.0) == 1.0
    with pytest.raises(ValueError):
        gamma_q(0.0, 1.0)
    with pytest.raises(ValueError):
        chi2_sf(1.0, 0)


def test_chi_square_uniform() -> None:
    even = chi_square_uniform([200, 200, 200])
    assert even.statistic == 0 and even.p_value == 1.0 and not even.rejects_uniform
    skewed = chi_square_uniform([600, 0, 0])
    assert skewed.rejects_uniform


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 0.5, None),
        ([5.0], 0.95, 5.0),
        ([1, 2, 3, 4], 0.5, 2),
        ([float(i) for i in range(1, 101)], 0.95, 95.0),
    ],
)
def test_quantile(values: list[float], q: float, expected: float | None) -> None:
    assert quantile(values, q) == expected


PODS = [Backend(f"web-{i}", f"10.1.0.{i}", 8080, "node-1", True, True, False) for i in range(3)]


def shape(**kw: object) -> RunShape:
    base: dict[str, object] = {
        "total": 600,
        "session_affinity": "None",
        "affinity_timeout_s": None,
        "reuse": False,
        "concurrency": 8,
        "protocol": "HTTP",
    }
    base.update(kw)
    return RunShape(**base)  # type: ignore[arg-type]


def outcomes(pods: Sequence[str | None], error: str | None = None) -> list[Outcome]:
    return [
        Outcome(i + 1, p, error if p is None and error else None, 1.0 + i % 10) for i, p in enumerate(pods)
    ]


def test_uniform_spread() -> None:
    s = summarize(outcomes([f"web-{i % 3}" for i in range(600)]), shape(), PODS)
    assert [p.hits for p in s.pods] == [200, 200, 200]
    assert all(p.share == pytest.approx(1 / 3) and p.expected_share == pytest.approx(1 / 3) for p in s.pods)
    assert s.chi_square is not None and not s.chi_square.rejects_uniform
    assert "consistent with a uniform spread over 3 pods" in s.verdict
    assert s.pods[0].p50_ms is not None and s.pods[0].p95_ms is not None


def test_skewed_spread_rejected() -> None:
    pods = ["web-0"] * 500 + ["web-1"] * 50 + ["web-2"] * 50
    s = summarize(outcomes(pods), shape(), PODS)
    assert s.chi_square is not None and s.chi_square.rejects_uniform
    assert s.verdict.startswith("not uniform") and "web-0 took 83%" in s.verdict


def test_client_ip_affinity_verdict() -> None:
    s = summarize(
        outcomes(["web-1"] * 200), shape(session_affinity="ClientIP", affinity_timeout_s=10800), PODS
    )
    assert s.verdict == "all 200 hits on pod web-1: consistent with ClientIP affinity; timeout 10800 s"
    assert s.chi_square is None
    assert [p.hits for p in s.pods] == [0, 200, 0]


def test_reuse_explained() -> None:
    s = summarize(outcomes(["web-2"] * 50), shape(reuse=True, concurrency=1), PODS)
    assert "one reused connection" in s.verdict
    assert any("balances connections, not requests" in e for e in s.explanations)


def test_errors_unattributed_and_sequence() -> None:
    results = [
        Outcome(3, None, "refused", 0.2),
        Outcome(1, "web-0", None, 2.0),
        Outcome(2, None, None, 3.0, reason="no pod name"),
        Outcome(4, None, "timeout", 2000.0),
    ]
    s = summarize(results, shape(total=4), PODS)
    assert s.sequence == ("web-0", None, "!refused", "!timeout")
    assert dict(s.errors) == {"refused": 1, "timeout": 1}
    assert s.unattributed == 1 and s.unattributed_reasons == (("no pod name", 1),)
    assert s.done == 4 and s.replies == 2 and s.attributed == 1
    assert "too few" in s.verdict


def test_endpoints_changed_and_gone_pods() -> None:
    pods = [f"web-{i % 3}" for i in range(300)] + ["web-9"] * 10
    s = summarize(outcomes(pods), shape(endpoints_changed=True), PODS)
    assert s.chi_square is None and "endpoints changed" in s.verdict
    gone = next(p for p in s.pods if p.pod == "web-9")
    assert not gone.current and gone.expected_share is None


@pytest.mark.parametrize(
    ("results", "verdict"),
    [
        ([], "no results yet"),
        ([Outcome(1, None, "refused", 1.0)], "every request failed"),
        ([Outcome(1, None, None, 1.0, reason="x")], "none could be attributed"),
    ],
)
def test_empty_verdicts(results: list[Outcome], verdict: str) -> None:
    assert verdict in summarize(results, shape(), PODS).verdict


# -- what the badge and verdict say, and where an even share is the expectation ------------------


def _outcomes(kinds: list[str | None]) -> list[Outcome]:
    return [
        Outcome(seq=i, pod="web-0" if k is None else None, error=k, latency_ms=1.0, connection=i)
        for i, k in enumerate(kinds)
    ]


@pytest.mark.parametrize(
    ("kinds", "status", "badge", "level"),
    [
        ([None, None], "done", "done", "ok"),
        (["timeout", "timeout"], "done", "failed · all errors", "bad"),
        ([None, "refused"], "done", "partial · 1 of 2 failed", "warn"),
        ([], "done", "failed · no requests", "bad"),
        ([], "failed", "failed", "bad"),
        (["refused"], "running", "running · errors", "warn"),
    ],
)
def test_badge_says_what_happened(kinds: list[str | None], status: str, badge: str, level: str) -> None:
    s = summarize(_outcomes(kinds), shape(finished=status != "running"), PODS)
    assert s.badge(status) == (badge, level)


def test_expected_share_only_where_an_even_spread_is_expected() -> None:
    outcomes = _outcomes([None] * 10)
    assert summarize(outcomes, shape(), PODS).pods[0].expected_share == pytest.approx(1 / 3)
    for other in (shape(session_affinity="ClientIP"), shape(reuse=True)):
        assert all(p.expected_share is None for p in summarize(outcomes, other, PODS).pods)


def test_http_against_a_raw_tcp_port_is_diagnosed() -> None:
    s = summarize(_outcomes(["bad_response"] * 20), shape(), PODS)
    assert s.verdict.startswith("this port does not speak HTTP") and "Try TCP" in s.verdict
    tcp = summarize(_outcomes(["bad_response"] * 20), shape(protocol="TCP"), PODS)
    assert "does not speak HTTP" not in tcp.verdict


def test_a_finished_run_without_results_does_not_say_not_yet() -> None:
    assert summarize([], shape(), PODS).verdict == "no results yet"
    assert "failed before any request" in summarize([], shape(finished=True), PODS).verdict
