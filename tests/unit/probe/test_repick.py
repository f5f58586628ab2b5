"""ClientIP affinity over time: fresh picks come from the timing (an idle gap longer than the timeout), a
change of pod is reported beside it, and a steady stream keeps the pin."""

from __future__ import annotations

from app.probe import repick
from app.probe.stats import Outcome


def replies(*picks: tuple[float, str | None], error_at: tuple[float, ...] = ()) -> list[Outcome]:
    """Outcomes at the given start times (s) answered by the given pods (None: unattributed)."""
    out = [Outcome(i + 1, pod, None, 1.0, at_ms=at * 1000) for i, (at, pod) in enumerate(picks)]
    out += [Outcome(100 + i, None, "timeout", 2000.0, at_ms=at * 1000) for i, at in enumerate(error_at)]
    return out


def test_a_steady_stream_refreshes_the_pin_and_says_so() -> None:
    r = repick.report(replies(*((float(i), "web-a") for i in range(12))), timeout_s=5, endpoints=3)
    assert (r.requests, r.longest_gap_s, r.fresh, r.unexpected, r.repicks) == (12, 1.0, (), (), 0)
    assert r.lines == (
        "12 requests, longest gap 1.0 s < timeout 5 s: each new connection refreshed the pin, so no re-pick "
        "was expected; none was observed",
    )
    assert r.changes_explained


def test_a_pause_longer_than_the_timeout_is_a_fresh_pick_whether_or_not_the_pod_changes() -> None:
    moved = repick.report(
        replies((0, "web-b"), (1, "web-b"), (8, "web-a"), (9, "web-a")), timeout_s=5, endpoints=2
    )
    assert [(p.seq, p.gap_s, p.changed, p.previous) for p in moved.fresh] == [(3, 7.0, True, "web-b")]
    assert moved.repicks == 1 and moved.changes_explained
    assert (
        "pause 7.0 s > timeout 5 s before request 3: fresh pick after the pause: web-b → web-a" in moved.lines
    )
    assert moved.lines[0].startswith("between the pauses the longest gap was 1.0 s < timeout 5 s")

    same = repick.report(replies((0, "web-b"), (7.5, "web-b")), timeout_s=5, endpoints=3)
    assert [(p.seq, p.changed) for p in same.fresh] == [(2, False)] and same.repicks == 0
    assert same.lines[-1].endswith("web-b again (the same pod by chance: 1 in 3)")


def test_a_change_within_the_timeout_is_unexpected() -> None:
    r = repick.report(replies((0, "web-a"), (1, "web-b"), (2, "web-b")), timeout_s=5, endpoints=2)
    assert [(p.seq, p.previous, p.pod) for p in r.unexpected] == [(2, "web-a", "web-b")]
    assert not r.changes_explained and r.fresh == ()
    assert "yet the pod changed 1 time(s)" in r.lines[0]
    assert r.lines[1].startswith("request 2: web-a → web-b after a gap of only 1.0 s < timeout 5 s")


def test_failures_refresh_the_pin_and_gaps_near_the_timeout_are_not_called() -> None:
    # Requests that failed at 3 s and 6 s still passed kube-proxy: the longest gap is 3 s, no fresh pick.
    r = repick.report(replies((0, "web-a"), (9, "web-a"), error_at=(3, 6)), timeout_s=5, endpoints=2)
    assert r.fresh == () and r.longest_gap_s == 3.0 and r.requests == 4
    border = repick.report(replies((0, "web-a"), (5.1, "web-b")), timeout_s=5, endpoints=2)
    assert border.fresh == () and border.unexpected == () and border.picks[1].borderline


def test_order_is_by_start_and_the_default_timeout_applies() -> None:
    r = repick.report(list(reversed(replies((0, "web-a"), (1, "web-a")))), timeout_s=None, endpoints=1)
    assert [p.seq for p in r.picks] == [1, 2] and r.timeout_s == repick.DEFAULT_TIMEOUT_S


def test_picks_are_bounded_but_every_notable_one_is_kept() -> None:
    many = [(float(i) * 0.01, "web-a") for i in range(repick.MAX_PICKS + 50)] + [(20.0, "web-b")]
    r = repick.report(replies(*many), timeout_s=5, endpoints=2)
    assert len(r.picks) == repick.MAX_PICKS + 1 and r.picks[-1].fresh and r.picks[-1].changed


def test_json_round_trip() -> None:
    r = repick.report(
        replies((0, "web-b"), (1, "web-a"), (8, "web-a")), timeout_s=5, endpoints=2, client="p 1"
    )
    assert repick.from_json(repick.to_json(r)) == r
    assert repick.from_json(None) is None
