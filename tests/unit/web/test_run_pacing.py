"""How often the viewers of a run are sent an update: paced by their number, and spread over the interval."""

from __future__ import annotations

import pytest

from app.web.probes import VIEWERS_PER_INTERVAL, run_interval, until_slot


@pytest.mark.parametrize(
    ("viewers", "interval"),
    [(1, 0.25), (VIEWERS_PER_INTERVAL, 0.25), (VIEWERS_PER_INTERVAL + 1, 0.5), (100, 1.0), (400, 4.0)],
)
def test_a_run_watched_by_many_is_updated_less_often(viewers: int, interval: float) -> None:
    assert run_interval(0.25, viewers) == pytest.approx(interval)


def test_updates_per_second_of_a_run_stay_bounded_however_many_watch() -> None:
    sends = [v / run_interval(0.25, v) for v in range(1, 1001)]
    assert max(sends) <= 2 * VIEWERS_PER_INTERVAL / 0.25


def test_each_viewer_wakes_at_its_own_moment_of_the_interval() -> None:
    """A hundred viewers woken by the same result: slept a whole interval, they would all wake together;
    each sleeps to its own slot, so their wake-ups spread over the interval, one per interval each."""
    interval, woken_at = 1.0, 50.0
    phases = [i / 100 * interval for i in range(100)]
    wakes = [woken_at + until_slot(woken_at, phase, interval) for phase in phases]
    assert all(woken_at < w <= woken_at + interval for w in wakes)
    tenths = {int((w - woken_at) * 10) for w in wakes}
    assert tenths >= set(range(10))  # every tenth of the interval has some
    # The next slot of a viewer just woken at its own slot is a whole interval on: never two updates in one.
    for phase in phases:
        at = woken_at + until_slot(woken_at, phase, interval)
        assert until_slot(at, phase, interval) == pytest.approx(interval)
