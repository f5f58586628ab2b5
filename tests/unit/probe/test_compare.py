"""Comparing runs: snapshots' one-line summaries, id parsing, the side-by-side table and its notes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from app.probe.compare import PodShare, RunSnapshot, compare, parse_run_ids

BASE = RunSnapshot(
    id="a" * 12,
    namespace="demo",
    service="web",
    port="http:80",
    protocol="HTTP",
    origin="dashboard",
    client_pod="svcscope-x",
    client_ip="198.18.0.9",
    client_node="node-1",
    count=100,
    done=100,
    reuse=False,
    concurrency=4,
    status="done",
    verdict="consistent with a uniform spread",
    session_affinity="None",
    affinity_timeout_s=None,
    pods=(PodShare("web-0", 50, 0.5, 0.5), PodShare("web-1", 50, 0.5, 0.5)),
    unattributed=0,
    errors=0,
    created=0.0,
)
PINNED = replace(
    BASE,
    id="b" * 12,
    origin="exec",
    client_pod="client",
    client_ip=None,
    session_affinity="ClientIP",
    affinity_timeout_s=10800,
    pods=(PodShare("web-0", 0, 0.0, 0.5), PodShare("web-1", 100, 1.0, 0.5)),
)


def test_distribution_and_client() -> None:
    assert BASE.distribution == "2 pods: web-0 50% · web-1 50%"
    assert PINNED.distribution == "1 pod: web-1 100%" and PINNED.client == "client"
    assert BASE.client == "svcscope-x (198.18.0.9)"
    assert replace(BASE, client_pod=None, client_ip=None).client == "unknown"
    assert replace(BASE, pods=()).distribution == "no attributed reply"
    many = tuple(PodShare(f"p{i}", 10 - i, 0.1, 0.1) for i in range(6))
    assert replace(BASE, pods=many).distribution.endswith("· +2 more")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["aaaaaaaaaaaa,bbbbbbbbbbbb"], ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]),
        (["aaaaaaaaaaaa", "bbbbbbbbbbbb", "aaaaaaaaaaaa"], ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]),
        ([" AAAAAAAAAAAA , bbbbbbbbbbbb,"], ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]),
    ],
)
def test_parse_run_ids(values: list[str], expected: list[str]) -> None:
    assert parse_run_ids(values) == expected


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["aaaaaaaaaaaa"], "between 2 and 6"),
        ([], "between 2 and 6"),
        ([",".join(f"{i:012x}" for i in range(7))], "between 2 and 6"),
        (["aaaaaaaaaaaa,../etc/passwd"], "not a run id"),
        (["aaaaaaaaaaaa,<script>"], "not a run id"),
    ],
)
def test_parse_run_ids_refuses(values: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_run_ids(values)


def test_compare_side_by_side_with_notes() -> None:
    other = replace(BASE, id="c" * 12, pods=(PodShare("web-2", 10, 1.0, 1.0),))
    c = compare([BASE, PINNED, other])
    assert [row.pod for row in c.rows] == ["web-0", "web-1", "web-2"]
    web2 = c.rows[2].cells
    assert web2[0] is None and web2[1] is None and web2[2] == PodShare("web-2", 10, 1.0, 1.0)
    assert c.rows[1].cells[1] == PodShare("web-1", 100, 1.0, 0.5)
    assert any("affinity differed" in n for n in c.notes)
    assert any("each origin is a different client" in n for n in c.notes)
    assert not any("different Services" in n for n in c.notes)


def test_compare_notes_for_mixed_targets_and_reuse() -> None:
    notes = compare([BASE, replace(BASE, id="d" * 12, service="db")]).notes
    assert any("different Services" in n for n in notes)
    notes = compare([BASE, replace(BASE, id="d" * 12, port="tcp:9000", reuse=True, status="running")]).notes
    assert any("different ports" in n for n in notes)
    assert any("balances connections, not requests" in n for n in notes)
    assert any("still going" in n for n in notes)
    assert compare([BASE, replace(BASE, id="e" * 12)]).notes == ()


def _pinned(run_id: str, origin: str, pod: str) -> RunSnapshot:
    return replace(PINNED, id=run_id, origin=origin, client_pod=origin, pods=(PodShare(pod, 100, 1.0, None),))


@pytest.mark.parametrize(
    ("runs", "expected"),
    [
        (
            [
                _pinned("a" * 12, "dashboard", "web-0"),
                _pinned("b" * 12, "exec", "web-1"),
                _pinned("c" * 12, "probe-pod", "web-2"),
            ],
            "3 clients → 3 pods, each sticky",
        ),
        (
            [_pinned("a" * 12, "dashboard", "web-0"), _pinned("b" * 12, "exec", "web-0")],
            "2 clients → one pod (web-0) for every run",
        ),
        (
            [replace(BASE, p_value=0.41), replace(BASE, id="b" * 12, p_value=0.7)],
            "spread over 2 pods in every run, p = 0.41, 0.7",
        ),
        (
            [BASE, replace(BASE, id="b" * 12, status="failed", pods=())],
            "only run aaaaaaaaaaaa has attributed replies: 2 pods: web-0 50% · web-1 50%"
            " (1 failed run left out)",
        ),
    ],
)
def test_conclusion_in_one_line(runs: list[RunSnapshot], expected: str) -> None:
    c = compare(runs)
    assert c.conclusion == expected
    assert c.failed_ids == {r.id for r in runs if r.status == "failed"}
