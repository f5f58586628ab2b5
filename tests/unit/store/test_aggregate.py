from __future__ import annotations

import pytest

from app.probe.stats import Outcome
from app.probe.watch import Second
from app.store.aggregate import SecondAggregator


def reply(seq: int, at_ms: float, pod: str | None, latency: float = 1.0) -> Outcome:
    return Outcome(seq, pod, None, latency, seq, at_ms=at_ms)


def error(seq: int, at_ms: float, kind: str, latency: float = 2000.0) -> Outcome:
    return Outcome(seq, None, kind, latency, seq, at_ms=at_ms)


CASES = [
    pytest.param(
        [reply(1, 10, "a", 1.0), reply(2, 500, "b", 3.0), reply(3, 999.9, "a", 2.0)],
        [Second(0, 3, 0, (("a", 2), ("b", 1)), (), 2.0, 3.0)],
        id="one-second",
    ),
    pytest.param(
        [
            reply(1, 100, "a"),
            error(2, 1100, "timeout"),
            reply(3, 1200, None, 5.0),
            error(4, 1300, "refused", 0.2),
        ],
        [
            Second(0, 1, 0, (("a", 1),), (), 1.0, 1.0),
            # Errors count as requests but their latency (the timeout) is not a reply's latency.
            Second(1, 3, 1, (), (("refused", 1), ("timeout", 1)), 5.0, 5.0),
        ],
        id="errors-and-unattributed",
    ),
    pytest.param(
        [reply(1, 0, "a"), reply(2, 5000, "b")],
        [
            Second(0, 1, 0, (("a", 1),), (), 1.0, 1.0),
            Second(5, 1, 0, (("b", 1),), (), 1.0, 1.0),
        ],
        id="an-idle-gap-leaves-no-rows",
    ),
    pytest.param(
        [Outcome(1, "a", None, None, 1), Outcome(2, None, "no_output", None, 2)],
        [Second(0, 2, 0, (("a", 1),), (("no_output", 1),), None, None)],
        id="remote-origin-without-timing",
    ),
]


@pytest.mark.parametrize(("outcomes", "expected"), CASES)
def test_take_all(outcomes: list[Outcome], expected: list[Second]) -> None:
    agg = SecondAggregator(grace_s=3.0)
    for o in outcomes:
        agg.add(o)
    assert agg.take_all() == expected
    assert agg.pending == 0 and agg.take_all() == []


def test_a_second_closes_once_a_request_started_in_it_can_no_longer_report() -> None:
    agg = SecondAggregator(grace_s=3.0)  # e.g. a 2 s timeout plus 1 s margin
    agg.add(reply(1, 200, "a"))
    agg.add(reply(2, 3900, "b", latency=50.0))  # reported at 3.95 s: second 0 may still get a report
    assert agg.take_closed() == []
    agg.add(reply(3, 3990, "a", latency=20.0))  # reported at 4.01 s >= (0 + 1) s + 3 s
    assert [s.second for s in agg.take_closed()] == [0]
    assert [s.second for s in agg.take_all()] == [3]


def test_a_late_outcome_reopens_its_second() -> None:
    agg = SecondAggregator(grace_s=0.5)
    agg.add(reply(1, 100, "a"))
    agg.add(reply(2, 2000, "a"))
    assert [s.second for s in agg.take_closed()] == [0]
    agg.add(reply(3, 900, "b"))  # a scheduler hiccup: second 0 was already taken
    assert agg.take_all() == [
        Second(0, 1, 0, (("b", 1),), (), 1.0, 1.0),
        Second(2, 1, 0, (("a", 1),), (), 1.0, 1.0),
    ]


def test_quantiles_are_nearest_rank_over_the_seconds_replies() -> None:
    agg = SecondAggregator(grace_s=1.0)
    for i in range(1, 101):
        agg.add(reply(i, i * 5.0, "a", latency=float(i)))
    (second,) = agg.take_all()
    assert (second.requests, second.p50_ms, second.p95_ms) == (100, 50.0, 95.0)
