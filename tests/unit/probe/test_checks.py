"""Ping vs TCP vs DNS: the plan, the reasons, and what a pod's output may (not) do."""

from __future__ import annotations

import json

import pytest

from app.echo import netcheck
from app.probe import checks
from app.probe.checks import Limiter, Plan, parse, plan
from app.probe.spec import RunLimitError

NAMES = ["web", "web.shop", "web.shop.svc.cluster.local"]


def web_plan() -> Plan:
    return plan(
        namespace="shop",
        name="web",
        cluster_ip="198.19.0.30",
        port=80,
        dns_names=NAMES,
        pod_ips=["198.18.0.11"],
    )


def line(check: str, target: str, **fields: object) -> str:
    return json.dumps({"check": check, "target": target, **fields})


def test_the_plan_pings_the_cluster_ip_connects_to_the_port_and_resolves_the_names() -> None:
    p = web_plan()
    assert p.argv() == [
        "--timeout", "1", "--ping", "198.19.0.30", "--tcp", "198.19.0.30:80",
        "--dns", "web", "--dns", "web.shop", "--dns", "web.shop.svc.cluster.local",
    ]  # fmt: skip
    assert all(expected == frozenset({"198.19.0.30"}) for _, expected in p.dns)
    assert checks.remote_argv(p)[:3] == ["python3", "-c", checks.SOURCE]


def test_a_headless_plan_expects_the_pod_ips_and_neither_pings_nor_connects() -> None:
    p = plan(
        namespace="shop",
        name="peers",
        cluster_ip=None,
        port=None,
        dns_names=NAMES,
        pod_ips=["198.18.0.12", "198.18.0.11"],
    )
    assert "--ping" not in p.argv() and "--tcp" not in p.argv()
    (c,) = parse(
        [line("dns", "web.shop", result="resolved", addresses=["198.18.0.11", "198.18.0.12"])], p, "shop"
    )[1:2]
    assert c.ok is True and "ready pods' IPs" in c.reason


def test_expected_results_with_their_reasons() -> None:
    out = parse(
        [
            line("ping", "198.19.0.30", result="no_answer"),
            line("tcp", "198.19.0.30:80", result="connected", ms=1.5),
            line("dns", "web", result="resolved", addresses=["198.19.0.30"]),
            line("dns", "web.shop", result="resolved", addresses=["198.19.0.30"]),
            line("dns", "web.shop.svc.cluster.local", result="resolved", addresses=["198.19.0.30"]),
        ],
        web_plan(),
        "shop",
    )
    assert [(c.kind, c.result, c.ok) for c in out] == [
        ("ping", "no_answer", True), ("tcp", "connected", True),
        ("dns", "resolved", True), ("dns", "resolved", True), ("dns", "resolved", True),
    ]  # fmt: skip
    assert "virtual address" in out[0].reason and out[1].ms == 1.5
    assert out[2].addresses == ("198.19.0.30",) and "the ClusterIP" in out[2].reason


def test_no_net_raw_is_said_not_judged() -> None:
    (ping, *_) = parse([line("ping", "198.19.0.30", result="no_net_raw")], web_plan(), "shop")
    assert ping.ok is None and "NET_RAW" in ping.reason


def test_a_bare_name_from_another_namespace_is_expected_to_fail() -> None:
    out = parse([line("dns", "web", result="not_found")], web_plan(), "svcscope")
    dns = next(c for c in out if c.target == "web")
    assert dns.ok is True and "search path" in dns.reason and "svcscope" in dns.reason
    unknown = next(
        c for c in parse([line("dns", "web", result="not_found")], web_plan(), None) if c.target == "web"
    )
    assert unknown.ok is None
    same = next(
        c for c in parse([line("dns", "web", result="not_found")], web_plan(), "shop") if c.target == "web"
    )
    assert same.ok is False


def test_a_pod_output_cannot_add_change_or_inject() -> None:
    """Only well-formed lines for planned checks count, each once; addresses must be IPs and results known."""
    hostile = [
        "not json",
        "[1, 2]",
        line("ping", "198.19.0.30", result="<script>alert(1)</script>"),
        line("ping", "198.19.0.30", result="no_answer"),  # a second line for the same check: ignored
        line("tcp", "10.0.0.1:22", result="connected"),  # not planned
        line("dns", "web.shop", result="resolved", addresses=["198.19.0.30", "<b>x</b>", 7]),
    ]
    out = parse(hostile, web_plan(), "shop")
    assert [c.target for c in out] == ["198.19.0.30", "198.19.0.30:80", *NAMES]
    assert out[0].result == "invalid" and out[0].ok is None
    assert out[1].result == "missing" and "no result" in out[1].reason
    dns = out[3]
    assert dns.addresses == ("198.19.0.30",) and dns.ok is True


def test_other_addresses_are_a_failure_that_names_the_expected_ones() -> None:
    out = parse([line("dns", "web.shop", result="resolved", addresses=["10.1.1.1"])], web_plan(), "shop")
    assert out[3].ok is False and "198.19.0.30" in out[3].reason


def test_the_limiter_counts_per_minute() -> None:
    now = [0.0]
    limiter = Limiter(clock=lambda: now[0])
    limiter.admit(2)
    limiter.admit(2)
    with pytest.raises(RunLimitError, match="2 check runs per minute"):
        limiter.admit(2)
    now[0] = 61.0
    limiter.admit(2)


def test_netcheck_runs_its_checks_in_order_against_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    """The same code the pods run: a refused port and an unknown name, each within its timeout."""
    assert netcheck.main(["--timeout", "0.5", "--tcp", "127.0.0.1:1", "--dns", "no-such-name.invalid"]) == 0
    printed = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(p["check"], p["result"]) for p in printed] == [("tcp", "refused"), ("dns", "not_found")]


def test_a_rejected_ping_keeps_its_detail_and_counts_as_the_expected_no_reply() -> None:
    (ping, *_) = parse(
        [line("ping", "198.19.0.30", result="rejected", detail="Operation not permitted")], web_plan(), "shop"
    )
    assert ping.ok is True and "nftables" in ping.reason and "Operation not permitted" in ping.reason
