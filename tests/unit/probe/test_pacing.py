"""Paced runs: the waits before each request, and the checks that keep a paced run inside its deadline."""

from __future__ import annotations

import pytest

from app.probe.pacing import Pacing, PacingError, checked


def test_waits_before_each_request() -> None:
    p = Pacing(interval_s=1.0, pause_after=4, pause_s=7.0)
    assert [p.wait_before(seq) for seq in range(1, 10)] == [0, 1, 1, 1, 8, 1, 1, 1, 8]
    assert p.pauses(9) == 2 and p.planned_wait_s(9) == 8 * 1.0 + 2 * 7.0
    assert Pacing().wait_before(5) == 0 and not Pacing().paced


OK = {"count": 10, "concurrency": 1, "reuse": False, "dashboard": True, "timeout_s": 2.0, "deadline_s": 900.0}


@pytest.mark.parametrize(
    ("pacing", "kw", "message"),
    [
        (Pacing(interval_s=-1), {}, "interval_s must be between 0 and"),
        (Pacing(interval_s=float("nan")), {}, "interval_s"),
        (Pacing(pause_after=2, pause_s=1e9), {}, "pause_s must be between"),
        (Pacing(pause_after=11, pause_s=1), {}, "pause_after must be between 0"),
        (Pacing(pause_after=2), {}, "go together"),
        (Pacing(interval_s=1), {"concurrency": 4}, "one request at a time"),
        (Pacing(interval_s=1), {"reuse": True}, "turn reuse off"),
        (Pacing(interval_s=1), {"dashboard": False}, "origin dashboard only"),
        (Pacing(interval_s=100), {"deadline_s": 900.0}, "longer than the run deadline of 900 s"),
    ],
)
def test_refusals_say_why(pacing: Pacing, kw: dict[str, object], message: str) -> None:
    with pytest.raises(PacingError, match=message):
        checked(pacing, **{**OK, **kw})  # type: ignore[arg-type]


def test_unpaced_runs_keep_their_concurrency() -> None:
    assert checked(Pacing(), **{**OK, "concurrency": 8}) == Pacing()  # type: ignore[arg-type]
    assert checked(Pacing(interval_s=1.0, pause_after=5, pause_s=7), **OK) == Pacing(1.0, 5, 7)  # type: ignore[arg-type]
