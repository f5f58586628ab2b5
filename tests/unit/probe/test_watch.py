"""The pure core of watch mode: per-second folding, events from snapshot diffs, the derived numbers."""

from __future__ import annotations

import dataclasses

import pytest

from app.probe.stats import Outcome
from app.probe.targets import Backend
from app.probe.watch import (
    LATENCY_SAMPLES,
    EventKind,
    Series,
    diff,
    measure,
    snapshot,
)
from tests.unit.fakes import make_service


def hit(at_s: float, pod: str | None, latency: float = 5.0) -> Outcome:
    return Outcome(0, pod, None, latency, at_ms=at_s * 1000.0)


def err(at_s: float, kind: str) -> Outcome:
    return Outcome(0, None, kind, 2000.0, at_ms=at_s * 1000.0)


def ep(pod: str, ip: str, *, ready: bool = True, terminating: bool = False) -> Backend:
    return Backend(pod, ip, 8080, "node-1", ready, ready, terminating)


def test_seconds_fold_hits_errors_and_latency() -> None:
    s = Series()
    for o in [hit(0.1, "a", 10), hit(0.5, "b", 20), hit(0.9, "a", 30), err(0.95, "refused"), hit(1.2, None)]:
        s.add(o)
    first, second = s.seconds()
    assert (first.second, first.requests, first.hits, first.errors) == (
        0,
        4,
        (("a", 2), ("b", 1)),
        (("refused", 1),),
    )
    assert (first.p50_ms, first.p95_ms) == (20, 30)
    assert (second.second, second.unattributed, second.hits) == (1, 1, ())
    assert s.requests == 5 and sum(s.hits.values()) + sum(s.errors.values()) + s.unattributed == 5
    assert s.seconds(after=0) == [second]


def test_ring_is_bounded_but_totals_are_whole_run() -> None:
    s = Series(ring_s=5)
    for t in range(20):
        s.add(hit(t + 0.5, f"p{t % 2}"))
    assert [x.second for x in s.seconds()] == [15, 16, 17, 18, 19]
    assert s.requests == 20 and s.total().hits == (("p0", 10), ("p1", 10))
    s.add(hit(3.0, "late"))  # older than the ring: totals only
    assert s.requests == 21 and len(s.seconds()) == 5


def test_a_quiet_second_arriving_late_is_inserted_in_order() -> None:
    s = Series()
    s.add(hit(0.5, "a"))
    s.add(hit(2.5, "a"))
    s.add(hit(1.5, "b"))  # a slow request of second 1 reports after one of second 2
    assert [(x.second, x.hits) for x in s.seconds()] == [(0, (("a", 1),)), (1, (("b", 1),)), (2, (("a", 1),))]


def test_rolling_window_beside_the_whole_run() -> None:
    s = Series()
    for t in range(10):
        s.add(hit(t + 0.5, "a" if t < 5 else "b"))
    assert s.window(10.0, 3).hits == (("b", 3),)
    assert s.window(10.0, 6).hits == (("b", 5), ("a", 1))
    assert s.total().hits == (("a", 5), ("b", 5))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ([ep("a", "1")], [ep("a", "1"), ep("b", "2", ready=False)], [(EventKind.ADDED, "b")]),
        ([ep("b", "2", ready=False)], [ep("b", "2")], [(EventKind.READY, "b")]),
        ([], [ep("c", "3")], [(EventKind.ADDED, "c"), (EventKind.READY, "c")]),
        ([ep("a", "1")], [ep("a", "1", ready=False, terminating=True)], [(EventKind.TERMINATING, "a")]),
        ([ep("a", "1")], [ep("a", "1", ready=False)], [(EventKind.NOT_READY, "a")]),
        ([ep("a", "1"), ep("b", "2")], [ep("b", "2")], [(EventKind.REMOVED, "a")]),
        ([ep("a", "1")], [ep("a", "1")], []),
    ],
)
def test_endpoint_events(old: list[Backend], new: list[Backend], expected: list[tuple[str, str]]) -> None:
    svc = make_service()
    events = diff(snapshot(svc, old), snapshot(svc, new), 4.2)
    assert [(e.kind, e.pod) for e in events] == expected
    assert all(e.at_s == 4.2 and e.pod and e.pod in e.text for e in events)


def test_first_snapshot_has_no_events() -> None:
    assert diff(None, snapshot(make_service(), [ep("a", "1")]), 0.0) == []


@pytest.mark.parametrize(
    ("change", "field", "text"),
    [
        ({"session_affinity": "ClientIP"}, "sessionAffinity", "sessionAffinity: None → ClientIP"),
        ({"internal_traffic_policy": "Local"}, "internalTrafficPolicy", "Cluster → Local"),
        ({"traffic_distribution": "PreferClose"}, "trafficDistribution", "(unset) → PreferClose"),
        ({"selector": {"app": "other"}}, "selector", "app=web → app=other"),
        ({"affinity_timeout_s": 30}, "sessionAffinityTimeoutSeconds", "(unset) → 30"),
    ],
)
def test_service_spec_changes(change: dict[str, object], field: str, text: str) -> None:
    svc = make_service()
    events = diff(snapshot(svc, []), snapshot(dataclasses.replace(svc, **change), []), 1.0)  # type: ignore[arg-type]
    assert [(e.kind, e.field) for e in events] == [(EventKind.SERVICE, field)]
    assert text in events[0].text


def test_ports_change_and_service_deleted() -> None:
    svc = make_service()
    from app.domain import ServicePort

    wider = dataclasses.replace(svc, ports=(*svc.ports, ServicePort("metrics", 9090, 9090)))
    (e,) = diff(snapshot(svc, []), snapshot(wider, []), 1.0)
    assert e.field == "ports" and "metrics:9090" in e.text
    assert [e.kind for e in diff(snapshot(svc, []), snapshot(None, []), 2.0)] == [EventKind.GONE]


def test_ready_to_first_hit_and_gone_to_last_hit() -> None:
    svc = make_service()
    s0 = snapshot(svc, [ep("a", "1"), ep("b", "2", ready=False)])
    s1 = snapshot(svc, [ep("a", "1"), ep("b", "2")])  # b Ready at 3.0
    s2 = snapshot(svc, [ep("a", "1", ready=False, terminating=True), ep("b", "2")])  # a terminating at 6.0
    events = diff(s0, s1, 3.0) + diff(s1, s2, 6.0)
    s = Series()
    for t in range(10):
        s.add(hit(t + 0.1, "a") if t < 6 else hit(t + 0.1, "b"))
        if t >= 3:
            s.add(hit(t + 0.6, "b"))
    s.add(err(6.2, "reset"))
    s.add(err(9.5, "timeout"))
    m = measure(s, events, change_window_s=2.0)
    (first,) = m.ready_to_first_hit
    assert (first.pod, first.lag_s) == ("b", 0.6)
    (last,) = m.gone_to_last_hit
    assert (last.pod, last.lag_s) == ("a", -0.9)  # its last hit started 0.9 s before it began terminating
    assert m.change_errors == (("reset", 1),)  # the timeout at 9.5 is outside both windows


def test_ready_without_any_hit_yet_has_no_lag() -> None:
    svc = make_service()
    events = diff(snapshot(svc, []), snapshot(svc, [ep("n", "9")]), 1.0)
    s = Series()
    s.add(hit(1.5, "other"))
    (lag,) = measure(s, events).ready_to_first_hit
    assert lag.hit_s is None and lag.lag_s is None


def flip(at: float, before: str, after: str) -> list:  # type: ignore[type-arg]
    svc = make_service(affinity=before)
    return diff(snapshot(svc, []), snapshot(dataclasses.replace(svc, session_affinity=after), []), at)


def test_convergence_to_clientip() -> None:
    s = Series()
    for t in range(12):
        for i in range(4):
            # Spread until second 7 (programming lag), then pinned to c.
            s.add(hit(t + i * 0.2, "abc"[i % 3] if t < 7 else "c"))
    (c,) = measure(s, flip(4.5, "None", "ClientIP")).convergence
    assert (c.before, c.after, c.matched_s, c.pod) == ("None", "ClientIP", 2.5, "c")


def test_convergence_to_none_and_not_yet() -> None:
    s = Series()
    for t in range(8):
        for i in range(4):
            s.add(hit(t + i * 0.2, "a" if t < 5 else "ab"[i % 2]))
    (c,) = measure(s, flip(3.0, "ClientIP", "None")).convergence
    assert c.matched_s == 2.0
    (pending,) = measure(s, flip(7.5, "None", "ClientIP")).convergence  # no whole second after it yet
    assert pending.matched_s is None


def test_clientip_repicks_after_idle_gap() -> None:
    s = Series()
    s.add(hit(0.0, "a"), affinity="ClientIP", timeout_s=5)
    s.add(hit(1.0, "a"), affinity="ClientIP", timeout_s=5)
    s.add(hit(8.0, "b"), affinity="ClientIP", timeout_s=5)  # idle 7 s > 5 s: a fresh pick
    s.add(hit(9.0, "c"), affinity="ClientIP", timeout_s=5)  # 1 s: stickiness broken
    s.add(hit(9.5, "a"), affinity="None", timeout_s=None)  # no affinity: not a re-pick
    assert [(r.before, r.after, r.gap_s, r.expected) for r in s.repicks] == [
        ("a", "b", 7.0, True),
        ("b", "c", 1.0, False),
    ]


def test_a_series_read_back_from_its_seconds_has_the_same_totals_and_timeline() -> None:
    live = Series()
    for o in [
        hit(0.2, "b"),
        hit(0.7, "a"),
        hit(1.1, "a"),
        err(1.5, "timeout"),
        hit(3.4, "c"),
        hit(3.6, None),
    ]:
        live.add(o)
    back = Series.restored(live.seconds())
    assert back.seconds() == live.seconds() and back.total() == live.total()
    assert back.first_hit == {"a": 0.0, "b": 0.0, "c": 3.0} and back.last_hit == {
        "a": 1.0,
        "b": 0.0,
        "c": 3.0,
    }
    assert back.window(4.0, 3) == live.window(4.0, 3)
    # Colours follow the order pods first answered, to the second: the same live and read back.
    assert live.pod_order() == back.pod_order() == ["a", "b", "c"]


def test_a_busy_second_keeps_a_bounded_latency_sample() -> None:
    s = Series()
    for i in range(LATENCY_SAMPLES * 3):
        s.add(hit(i / (LATENCY_SAMPLES * 3), "a", latency=float(i % 100)))
    (only,) = s.seconds()
    assert only.requests == LATENCY_SAMPLES * 3 and len(s._ring[0][1].latencies) == LATENCY_SAMPLES
    assert only.p50_ms is not None and 40 <= only.p50_ms <= 60
