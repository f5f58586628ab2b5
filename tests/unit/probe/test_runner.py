from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable

import pytest

from app.config import Settings
from app.domain import Origin
from app.probe import calibrate as calibrate_module
from app.probe.run import ENDPOINTS_MAX_AGE_S, Run, RunStatus
from app.probe.runner import ProbeRunner
from app.probe.spec import ProbeSpec, RunLimitError, SpecError
from app.probe.targets import ProbeProtocol
from tests.unit.fakes import (
    NS,
    SLICE_PORTS,
    WEB,
    Cluster,
    FakeRemote,
    FakeView,
    limits,
    make_cluster,
)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async for c in make_cluster(3):
        yield c


async def finished(run: Run) -> Run:
    assert run.task is not None
    done, _ = await asyncio.wait([run.task], timeout=20)
    assert done, "run did not finish in time"
    return run


def spec(**kw: object) -> ProbeSpec:
    base: dict[str, object] = {
        "namespace": NS,
        "service": "web",
        "port": "http",
        "count": 60,
        "concurrency": 4,
    }
    base.update(kw)
    return ProbeSpec(**base)  # type: ignore[arg-type]


async def test_new_connections_spread_over_every_pod(cluster: Cluster) -> None:
    runner = cluster.runner()
    run = await finished(runner.start(spec()))
    s = run.summary()
    assert run.status == RunStatus.DONE
    assert [p.hits for p in s.pods] == [20, 20, 20]
    assert s.done == 60 and s.errors == () and s.unattributed == 0
    assert s.connections == 60 and cluster.http_lb.connections == 60
    assert run.calibration.mode == "auto"
    assert s.chi_square is not None and not s.chi_square.rejects_uniform
    assert run.first_reply_ms is not None
    assert set(run.samples) == {"web-0", "web-1", "web-2"}


async def test_runs_share_the_dashboards_requests_in_flight(cluster: Cluster) -> None:
    """Two runs of concurrency 8 under a cap of 3 in flight: never more than 3 connections open at the
    balancer, and both runs send every request."""
    runner = cluster.runner(max_in_flight=3)
    runs = [runner.start(spec(count=40, concurrency=8)) for _ in range(2)]
    for run in runs:
        await finished(run)
        assert run.status == RunStatus.DONE and run.summary().done == 40 and run.summary().errors == ()
    assert cluster.http_lb.connections == 80 and cluster.http_lb.peak <= 3
    assert runs[0].in_flight_cap == 3  # what the run page says beside the concurrency asked for


async def test_reuse_one_connection_one_pod(cluster: Cluster) -> None:
    run = await finished(cluster.runner().start(spec(reuse=True, concurrency=1, count=30)))
    s = run.summary()
    assert [p.hits for p in s.pods if p.hits] == [30]
    assert s.connections == 1 and cluster.http_lb.connections == 1
    assert "one reused connection" in s.verdict and s.explanations


async def test_head_and_path(cluster: Cluster) -> None:
    run = await finished(cluster.runner().start(spec(method="head", path="/x?y=1", count=6)))
    s = run.summary()
    assert s.attributed == 6  # HEAD has no body: the X-Pod-Name header names the pod


@pytest.mark.parametrize("reuse", [False, True])
async def test_tcp_banner(cluster: Cluster, reuse: bool) -> None:
    run = await finished(
        cluster.runner().start(
            spec(port="tcp", protocol=ProbeProtocol.TCP, count=9, concurrency=3, reuse=reuse)
        )
    )
    s = run.summary()
    assert s.attributed == 9
    assert cluster.tcp_lb.connections == (3 if reuse else 9)


async def test_udp_datagram(cluster: Cluster) -> None:
    run = await finished(cluster.runner().start(spec(port="9001", protocol=ProbeProtocol.UDP, count=5)))
    s = run.summary()
    assert [p.hits for p in s.pods] == [5, 0, 0]


async def test_fingerprint_attribution() -> None:
    async for c in make_cluster(3, "anonymous"):
        run = await finished(c.runner().start(spec()))
        s = run.summary()
        assert run.calibration.mode == "fingerprint"
        assert [p.hits for p in s.pods] == [20, 20, 20]
        assert s.unattributed == 0


async def test_identical_replies_are_unattributable() -> None:
    async for c in make_cluster(3, "identical"):
        run = await finished(c.runner().start(spec()))
        s = run.summary()
        assert run.calibration.mode == "none" and "identical" in run.calibration.note
        assert s.attributed == 0 and s.unattributed == 60
        assert "none could be attributed" in s.verdict
        assert "identical" in s.unattributed_reasons[0][0]


async def test_explicit_rule_from_annotation() -> None:
    async for c in make_cluster(2, annotations={"svcscope.io/pod-identity": "json:pod"}):
        run = await finished(c.runner().start(spec(count=10)))
        assert run.rule is not None and run.calibration.mode == "rule"
        assert run.summary().attributed == 10
        assert {o.method for o in run.results} == {"rule"}


async def test_refused_and_no_endpoints(cluster: Cluster) -> None:
    del cluster.routes[("198.19.0.50", 80)]
    run = await finished(cluster.runner().start(spec(count=5)))
    assert dict(run.summary().errors) == {"refused": 5}
    cluster.view.set_endpoints(WEB, [], SLICE_PORTS)
    run = await finished(cluster.runner().start(spec(count=5)))
    assert dict(run.summary().errors) == {"no_endpoints": 5}
    assert run.status == RunStatus.DONE


async def test_follow_delivers_every_result(cluster: Cluster) -> None:
    run = cluster.runner().start(spec(count=200, concurrency=16))
    seen: list[int] = []

    async def slow_subscriber() -> None:
        async for batch in run.follow():
            seen.extend(o.seq for o in batch)
            await asyncio.sleep(0)  # yield to the run: batches grow, nothing is dropped

    await asyncio.wait_for(slow_subscriber(), 20)
    assert sorted(seen) == list(range(1, 201))


async def test_cancel(cluster: Cluster) -> None:
    runner = cluster.runner()
    run = runner.start(spec(count=10_000, concurrency=1))
    assert runner.cancel(run.id)
    await finished(run)
    assert run.status == RunStatus.CANCELLED and len(run.results) < 10_000
    assert not runner.cancel(run.id)


async def test_limits(cluster: Cluster) -> None:
    runner = cluster.runner(max_active=1, per_minute=3, kept=2)
    first = runner.start(spec(count=10_000, concurrency=1))
    with pytest.raises(RunLimitError, match="active"):
        runner.start(spec())
    runner.cancel(first.id)
    await finished(first)
    second = await finished(runner.start(spec(count=1)))
    third = await finished(runner.start(spec(count=1)))
    with pytest.raises(RunLimitError, match="per minute"):
        runner.start(spec(count=1))
    assert [r.id for r in runner.runs()] == [third.id, second.id]  # bounded store, newest first
    assert runner.get(first.id) is None
    await runner.aclose()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"count": 0}, "count"),
        ({"count": 10_001}, "count"),
        ({"concurrency": 257}, "concurrency"),
        ({"timeout_s": 0}, "timeout"),
        ({"method": "POST"}, "method"),
        ({"path": "http://169.254.169.254/"}, "single '/'"),
        ({"path": "//evil.example/"}, "single '/'"),
        ({"path": "/a b"}, "printable"),
        ({"path": "/" + "a" * 600}, "longer"),
        ({"path": "/\r\nHost: x"}, "printable"),
        ({"identity": "xpath:/a"}, "identity"),
    ],
)
async def test_bad_specs(cluster: Cluster, kw: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        cluster.runner().start(spec(**kw))


def test_runner_needs_no_loop_until_start() -> None:
    make: Callable[[], ProbeRunner] = lambda: ProbeRunner(FakeView(), limits())  # noqa: E731
    assert make().runs() == []


async def test_run_stops_when_endpoints_turn_to_a_refused_address(cluster: Cluster) -> None:
    run = cluster.runner().start(spec(count=10_000, concurrency=1))
    async for _ in run.follow():
        cluster.view.set_endpoints(WEB, [("web-0", "169.254.169.254")], SLICE_PORTS, watched=False)
        break
    await finished(run)
    assert run.status == RunStatus.FAILED and run.error is not None and "metadata" in run.error
    assert len(run.results) < 10_000


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"origin": Origin.PROBE_POD, "concurrency": 2}, "concurrency to 1"),
        ({"origin": Origin.EXEC, "concurrency": 1}, "exec_pod"),
        ({"origin": Origin.EXEC, "concurrency": 1, "exec_pod": "nope"}, "not a watched running pod"),
    ],
)
async def test_remote_origin_checks(cluster: Cluster, kw: dict[str, object], message: str) -> None:
    runner = ProbeRunner(
        cluster.view, limits(), remote=FakeRemote([]), origins=(Origin.PROBE_POD, Origin.EXEC)
    )
    with pytest.raises(SpecError, match=message):
        runner.start(spec(**kw))


async def test_remote_origins_off_by_default(cluster: Cluster) -> None:
    with pytest.raises(SpecError, match="not enabled"):
        cluster.runner().start(spec(origin=Origin.PROBE_POD, concurrency=1))
    # Enabled in settings but without a client to act with: still only the dashboard.
    assert ProbeRunner(cluster.view, limits(), origins=(Origin.EXEC,)).origins == (Origin.DASHBOARD,)
    with pytest.raises(ValueError, match="SVCSCOPE_PROBE_ORIGINS"):
        Settings(probe_origins="probe-pod,ssh")
    assert Settings(probe_origins="dashboard, exec ").probe_origins == [Origin.EXEC]


async def test_attribution_cache_forgets_on_endpoint_change(cluster: Cluster) -> None:
    """Replies are attributed once per distinct reply, and again after the endpoints change."""
    from app.probe.attribution import Reply

    now = [0.0]
    done = await finished(cluster.runner().start(spec(count=1, concurrency=1)))
    # A run still going (a finished one keeps its endpoints frozen), on the test's clock.
    run = Run("0123456789ab", done.spec, done.target, None, cluster.view, clock=lambda: now[0])
    reply = Reply(body=b'{"pod": "web-7"}', status=200)
    assert run.attribute(reply).pod is None  # no such endpoint yet
    assert run.attribute(reply) is run.attribute(reply)  # remembered
    cluster.view.set_endpoints(WEB, [("web-7", "198.18.0.17")], SLICE_PORTS)
    assert run.attribute(reply).pod is None  # the endpoints read a moment ago still hold
    now[0] += ENDPOINTS_MAX_AGE_S  # then they are re-read
    assert run.attribute(reply).pod == "web-7"


async def test_a_calibration_is_reused_for_the_same_pods_briefly() -> None:
    """A second run against the same pods at the same addresses skips the direct probes."""
    async for c in make_cluster(3, "anonymous"):
        runner = c.runner()
        first = await finished(runner.start(spec()))
        second = await finished(runner.start(spec()))
        assert first.calibration.mode == second.calibration.mode == "fingerprint"
        assert "ago" not in first.calibration.note
        assert "s ago, same pods at the same addresses" in second.calibration.note
        assert [p.hits for p in second.summary().pods] == [20, 20, 20]  # the remembered fingerprints work
        other = await finished(runner.start(spec(path="/other")))
        assert "ago" not in other.calibration.note  # another request: calibrated afresh


def _runner_on_node(cluster: Cluster, node: str | None) -> ProbeRunner:
    return ProbeRunner(cluster.view, limits(), dial=cluster.dial, dashboard_node=node)


async def test_dashboard_run_is_judged_against_the_endpoints_its_node_may_pick(cluster: Cluster) -> None:
    run = await finished(_runner_on_node(cluster, "node-1").start(spec(count=12)))
    routing = run.summary().routing
    assert routing is not None
    assert (routing.client_node, routing.fate) == ("node-1", "routed")
    assert routing.expected == ("web-0", "web-1", "web-2")
    assert routing.as_expected, routing.lines
    assert routing.lines[0].startswith("as expected")


async def test_local_policy_on_a_node_without_endpoints_expects_a_drop(cluster: Cluster) -> None:
    # Every endpoint is on node-1; a client on node-2 should see nothing answer. The fake balancer does
    # answer (it ignores the policy), so the verdict must name the pods that should not have answered.
    svc = cluster.view.services[WEB]
    cluster.view.add_service(dataclasses.replace(svc, internal_traffic_policy="Local"))
    run = await finished(_runner_on_node(cluster, "node-2").start(spec(count=6)))
    routing = run.summary().routing
    assert routing is not None and routing.fate == "dropped" and routing.expected == ()
    assert not routing.as_expected
    assert "answered although traffic should be dropped" in routing.lines[0]


async def test_the_verdict_is_frozen_when_the_run_ends(cluster: Cluster) -> None:
    run = await finished(_runner_on_node(cluster, "node-1").start(spec(count=6)))
    before = run.summary().routing
    svc = cluster.view.services[WEB]
    cluster.view.add_service(dataclasses.replace(svc, internal_traffic_policy="Local"))
    cluster.view.set_endpoints(WEB, [("web-7", "198.18.0.77")], SLICE_PORTS)
    assert run.summary().routing == before


async def test_no_verdict_while_the_client_node_is_unknown(cluster: Cluster) -> None:
    run = await finished(_runner_on_node(cluster, None).start(spec(count=3)))
    assert run.summary().routing is None


async def test_a_calibration_capped_below_the_pod_count_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Service at the per-Service threshold (250 endpoints) is calibrated whole; past the cap the note
    tells how many pods were probed, so unmatched replies are not a mystery."""
    assert calibrate_module.MAX_CALIBRATED_PODS >= 250
    monkeypatch.setattr(calibrate_module, "MAX_CALIBRATED_PODS", 2)
    async for c in make_cluster(3, "anonymous"):
        run = await finished(c.runner().start(spec(count=30, concurrency=3)))
        assert run.calibration.mode == "fingerprint" and len(run.calibration.probed) == 2
        assert "; 2 of 3 pods probed directly" in run.calibration.note, run.calibration.note
        s = run.summary()
        assert s.attributed + s.unattributed == 30 and s.unattributed > 0
