"""The fan-out's pure parts: which nodes get a probe pod, the members' specs, and the client-by-pod matrix
built from the runs' observations (each row judged by its run's own expectation)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from app.domain import Node, Origin
from app.probe import fanout
from app.probe.fanout import Fanout, Mode, Observation, RowState, Skipped
from app.probe.spec import ProbeSpec, SpecError
from app.routing import Routing

BASE = ProbeSpec("shop", "web", "http", count=20, concurrency=7, timeout_s=1.0)
ZONES = {"n1": "zone-a", "n2": "zone-b", "n3": "zone-a"}
PODS = {"a1": "n1", "b1": "n2", "a3": "n3"}


def node(name: str, *, ready: bool = True, cordoned: bool = False) -> Node:
    return Node(name, ZONES.get(name), None, (), ready, unschedulable=cordoned)


def test_client_nodes_are_the_ready_schedulable_ones_and_the_others_say_why() -> None:
    nodes = [node("n3"), node("n1"), node("n2", ready=False), node("n4", cordoned=True)]
    chosen, skipped = fanout.client_nodes(nodes)
    assert chosen == ("n1", "n3")
    assert skipped == (Skipped("n2", "not Ready"), Skipped("n4", "cordoned (spec.unschedulable)"))


def test_member_specs_pin_one_probe_pod_per_node_one_request_at_a_time() -> None:
    specs = fanout.member_specs(BASE, Mode.NODES, nodes=("n1", "n2"), most=10)
    assert [s.node for s in specs] == ["n1", "n2"]
    assert {(s.origin, s.concurrency, s.count) for s in specs} == {(Origin.PROBE_POD, 1, 20)}


def test_member_specs_for_many_clients_are_unpinned() -> None:
    specs = fanout.member_specs(BASE, Mode.CLIENTS, clients=3, most=10)
    assert len(specs) == 3 and {s.node for s in specs} == {None}


@pytest.mark.parametrize(
    ("mode", "kw", "words"),
    [
        (Mode.CLIENTS, {"clients": 0}, "clients must be between 1 and 4"),
        (Mode.CLIENTS, {"clients": 5}, "clients must be between 1 and 4"),
        (Mode.NODES, {"nodes": ()}, "no Ready, schedulable node"),
        (Mode.NODES, {"nodes": ("a", "b", "c", "d", "e")}, "5 nodes, more than the 4 probe pods"),
    ],
)
def test_member_specs_refuse_out_of_bounds(mode: Mode, kw: dict[str, object], words: str) -> None:
    with pytest.raises(SpecError, match=words):
        fanout.member_specs(BASE, mode, most=4, **kw)  # type: ignore[arg-type]


def routing(node: str, expected: tuple[str, ...], ok: bool, *lines: str, fate: str = "routed") -> Routing:
    return Routing(node, ZONES[node], fate, expected, ("why",), ok, lines or ("as expected: ...",))


def obs(
    run: str,
    node: str | None,
    hits: dict[str, int],
    rt: Routing | None,
    *,
    status: str = "done",
    errors: dict[str, int] | None = None,
    error: str | None = None,
    ip: str | None = None,
) -> Observation:
    done = sum(hits.values()) + sum((errors or {}).values())
    return Observation(
        run, status, error, f"svcscope-probe-{run}", ip, node, done, 20, hits, errors or {}, rt, PODS
    )


def fan(mode: Mode = Mode.NODES, n: int = 3) -> Fanout:
    return Fanout("f" * 12, mode, BASE, tuple(f"r{i}" for i in range(n)))


def test_every_node_as_expected_with_a_drop_makes_one_matrix_by_zone() -> None:
    observations = [
        obs("r0", "n1", {"a1": 20}, routing("n1", ("a1",), True)),
        obs(
            "r1",
            "n2",
            {},
            routing("n2", (), True, "dropped as expected (...)", fate="dropped"),
            errors={"timeout": 20},
        ),
        obs("r2", "n3", {"a3": 20}, routing("n3", ("a3",), True)),
    ]
    m = fanout.matrix(fan(), observations, ZONES, client_ip_affinity=False)
    assert [c.pod for c in m.columns] == ["a1", "a3"]  # only pods that answered or were expected
    assert [(c.node, c.zone) for c in m.columns] == [("n1", "zone-a"), ("n3", "zone-a")]
    assert [r.label for r in m.rows] == ["n1", "n2", "n3"]
    assert [r.cells for r in m.rows] == [(20, 0), (0, 0), (0, 20)]
    assert [r.state for r in m.rows] == [RowState.AS_EXPECTED, RowState.DROPPED, RowState.AS_EXPECTED]
    assert m.rows[1].zone == "zone-b" and m.error_kinds == ("timeout",)
    assert m.finished and m.as_expected is True
    assert m.lines == ("as expected for all 3 clients",)


def test_a_row_that_differs_and_a_node_that_could_not_run_fail_the_whole_verdict_with_their_reasons() -> None:
    observations = [
        obs(
            "r0",
            "n1",
            {"a1": 15, "b1": 5},
            routing("n1", ("a1", "a3"), False, "pod b1 answered but should not"),
        ),
        obs(
            "r1",
            "n2",
            {},
            routing("n2", ("b1",), False, "nothing answered"),
            status="failed",
            error="probe pod x cannot start: ErrImagePull",
        ),
    ]
    m = fanout.matrix(fan(n=2), observations, ZONES, client_ip_affinity=False)
    assert [c.pod for c in m.columns] == ["a1", "a3", "b1"]
    assert m.rows[0].state is RowState.DIFFERS and m.rows[0].cells == (15, 0, 5)
    assert m.rows[1].state is RowState.FAILED
    assert m.rows[1].lines == ("failed: probe pod x cannot start: ErrImagePull",)
    assert m.as_expected is False
    assert m.lines == (
        "n1: pod b1 answered but should not",
        "n2: failed: probe pod x cannot start: ErrImagePull",
    )


def test_a_row_whose_replies_named_no_pod_says_so_rather_than_only_nothing_answered() -> None:
    reason = "no current endpoint's pod name or IP in the reply"
    quiet = obs("r0", "n1", {}, routing("n1", ("a1",), False, "nothing answered"))
    quiet = replace(quiet, done=20, unattributed=20, unattributed_reason=reason)
    m = fanout.matrix(fan(n=1), [quiet], ZONES, client_ip_affinity=False)
    assert m.rows[0].state is RowState.DIFFERS
    assert m.rows[0].lines == ("nothing answered", f"20 of 20 replies named no endpoint: {reason}")
    assert m.lines == tuple(f"n1: {line}" for line in m.rows[0].lines)


def test_while_a_client_runs_there_is_no_verdict_yet() -> None:
    observations = [
        obs("r0", "n1", {"a1": 20}, routing("n1", ("a1",), True)),
        obs("r1", "n2", {"b1": 3}, routing("n2", ("b1",), True), status="running"),
    ]
    m = fanout.matrix(fan(n=2), observations, ZONES, client_ip_affinity=False)
    assert not m.finished and m.as_expected is None
    assert m.rows[1].state is RowState.RUNNING and m.rows[1].lines == ("3/20 requests so far",)
    assert m.lines == ("1 of 2 clients finished",)


def test_a_run_without_a_known_client_node_is_unjudged_and_a_gone_run_is_failed() -> None:
    observations = [obs("r0", None, {"a1": 20}, None), fanout.missing("r1", "no longer kept")]
    m = fanout.matrix(fan(Mode.CLIENTS, 2), observations, ZONES, client_ip_affinity=False)
    assert [r.label for r in m.rows] == ["client 1", "client 2"]
    assert [r.state for r in m.rows] == [RowState.UNJUDGED, RowState.FAILED]
    assert m.as_expected is False


def test_many_clients_on_client_ip_count_stuck_clients_and_distinct_pods() -> None:
    observations = [
        obs("r0", "n1", {"a1": 20}, routing("n1", ("a1", "a3", "b1"), True), ip="198.18.0.40"),
        obs("r1", "n2", {"b1": 20}, routing("n2", ("a1", "a3", "b1"), True), ip="198.18.0.41"),
        obs("r2", "n3", {"b1": 20}, routing("n3", ("a1", "a3", "b1"), True), ip="198.18.0.42"),
    ]
    m = fanout.matrix(fan(Mode.CLIENTS), observations, ZONES, client_ip_affinity=True)
    assert m.stuck_clients == 3 and m.distinct_pods == 2 and all(r.stuck for r in m.rows)
    assert m.as_expected is True
    assert m.lines == ("ClientIP: 3 of 3 clients stuck to exactly one pod; 2 distinct pod(s) used",)
    # A client answered by two pods is not sticky: its run's verdict says so, and the total does too.
    split = replace(
        observations[0],
        hits={"a1": 10, "a3": 10},
        routing=routing(
            "n1", ("a1", "a3", "b1"), False, "ClientIP affinity should keep one client on one pod"
        ),
    )
    m = fanout.matrix(fan(Mode.CLIENTS), [split, *observations[1:]], ZONES, client_ip_affinity=True)
    assert m.stuck_clients == 2 and m.distinct_pods == 3 and not m.rows[0].stuck
    assert m.as_expected is False
    assert m.lines[0] == "ClientIP: 2 of 3 clients stuck to exactly one pod; 3 distinct pod(s) used"
    assert m.lines[1] == "client 1: ClientIP affinity should keep one client on one pod"


def test_no_client_at_all_is_not_as_expected() -> None:
    m = fanout.matrix(fan(n=0), [], ZONES, client_ip_affinity=False)
    assert m.as_expected is False and m.lines == ("no client ran",)


def test_the_book_keeps_the_newest_fanouts() -> None:
    book = fanout.FanoutBook(size=2)
    for i in range(3):
        book.add(Fanout(f"{i:012x}", Mode.NODES, BASE, ()))
    assert book.get(f"{0:012x}") is None and book.get(f"{2:012x}") is not None
