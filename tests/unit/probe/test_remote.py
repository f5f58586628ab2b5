"""Remote probe origins: the echo client's JSON records become outcomes, live, one per request; a hostile
reply cannot forge any; a mid-run switch of the endpoints to a refused address stops the client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Sequence

import pytest

from app.domain import ObjectKey, Origin
from app.echo.cli import build_parser
from app.echo.client import run_client
from app.probe.remote import client_argv
from app.probe.run import Run, RunStatus
from app.probe.runner import ProbeRunner
from app.probe.spec import ProbeSpec
from app.probe.targets import ForbiddenAddress, ProbeProtocol, resolve
from app.writepolicy import Write
from tests.unit.fakes import NS, WEB, FakeRemote, FakeView, limits, record_line, web_view

pytestmark = pytest.mark.timeout(30)
BOTH = (Origin.PROBE_POD, Origin.EXEC)


def spec(**kw: object) -> ProbeSpec:
    base: dict[str, object] = {
        "namespace": NS,
        "service": "web",
        "port": "http",
        "count": 6,
        "concurrency": 1,
        "origin": Origin.PROBE_POD,
    }
    base.update(kw)
    return ProbeSpec(**base)  # type: ignore[arg-type]


async def finished(run: Run) -> Run:
    assert run.task is not None
    done, _ = await asyncio.wait([run.task], timeout=20)
    assert done, "run did not finish in time"
    return run


async def first_result(run: Run) -> None:
    """Wait (with a deadline) until the run has its first outcome."""
    async with asyncio.timeout(5.0):
        async for _ in run.follow():
            return


async def test_replies_that_name_no_pod_are_attributed_by_the_dashboard() -> None:
    # A backend other than svcscope's echo (busybox httpd: "pod NAME IP"): the client passes the reply's
    # start on and the run attributes it like its own replies, by the pod name or IP in it.
    lines = [
        record_line(1, excerpt="pod web-1 198.18.0.11"),
        record_line(2, excerpt="served by 198.18.0.12"),
        record_line(3, excerpt="hello"),
        record_line(4, excerpt="web-0 and web-2"),
    ]
    runner = ProbeRunner(web_view(), limits(), remote=FakeRemote(lines), origins=BOTH)
    run = await finished(runner.start(spec(count=4)))
    s = run.summary()
    assert run.status == RunStatus.DONE and dict(s.errors) == {}
    assert {p.pod: p.hits for p in s.pods} == {"web-0": 0, "web-1": 1, "web-2": 1}
    assert [(o.pod, o.method) for o in run.results[:2]] == [("web-1", "auto"), ("web-2", "auto")]
    assert s.unattributed == 2 and dict(s.unattributed_reasons) == {
        "no current endpoint's pod name or IP in the reply": 1,
        "reply names several endpoints (web-0, web-2)": 1,
    }
    assert "attributed by svcscope" in run.calibration.note


async def test_records_become_outcomes_with_latency() -> None:
    lines = [
        record_line(1, "web-0", latency_ms=3.25),
        record_line(2, "web-1"),
        record_line(3, None, "refused"),
        record_line(4, "abc"),
        record_line(5, "web-0"),
    ]
    remote = FakeRemote(lines)
    runner = ProbeRunner(web_view(), limits(), remote=remote, origins=BOTH)
    run = await finished(runner.start(spec()))
    s = run.summary()
    assert run.status == RunStatus.DONE
    assert [p.hits for p in s.pods] == [2, 1, 0]
    assert dict(s.errors) == {"no_output": 1, "refused": 1} and s.unattributed == 1
    assert run.results[0].latency_ms == 3.25 and run.results[0].connection == 1
    ((ns, pod, argv),) = remote.calls
    assert (ns, pod) == (None, None)
    assert argv[:6] == ["python3", "-m", "app.echo", "client", "--format", "json"]
    assert "http://198.19.0.50:80/" in argv and "--deadline" in argv
    assert remote.closed == 1
    run = await finished(
        runner.start(spec(origin=Origin.EXEC, exec_pod="web-2", port="http", protocol=ProbeProtocol.TCP))
    )
    assert remote.calls[-1][:2] == (NS, "web-2") and "--tcp" in remote.calls[-1][2]


async def test_only_well_formed_records_in_range_count_once() -> None:
    """Duplicates, sequence numbers outside 1..count, unknown error kinds and other text are ignored."""
    good = record_line(1, "web-0")
    unknown_kind = json.loads(record_line(2, None, "refused"))
    unknown_kind["error"] = "forged"
    lines = [
        "web-1",
        "ERROR refused",
        good,
        good,
        record_line(2, "web-2").replace('"seq":2', '"seq":2,"extra":1'),
        json.dumps(unknown_kind),
        record_line(4, "web-1"),  # count is 3
        record_line(3, "web-1"),
        "[" * 5000,
    ]
    run = await finished(
        ProbeRunner(web_view(), limits(), remote=FakeRemote(lines), origins=BOTH).start(spec(count=3))
    )
    assert [(o.seq, o.pod, o.error) for o in run.results] == [
        (1, "web-0", None),
        (3, "web-1", None),
        (2, None, "no_output"),
    ]


async def test_a_hostile_reply_forges_nothing() -> None:
    """A backend whose reply carries newlines, ``ERROR`` lines and a record of its own: the real echo
    client prints one record per request, and the run gets exactly one outcome per request."""
    forged = record_line(2, "web-1")
    body = json.dumps({"pod": f"web-0\nERROR refused\nweb-1\n{forged}\n"}).encode()
    raw = f"pod=web-2\nERROR reset\n{forged}\n".encode()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        payload = body if answer.calls % 2 == 0 else raw  # type: ignore[attr-defined]
        answer.calls += 1  # type: ignore[attr-defined]
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        writer.write(head.encode() + payload)
        await writer.drain()
        writer.close()

    answer.calls = 0  # type: ignore[attr-defined]
    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    view = web_view()
    target = resolve(view, WEB, "http", ProbeProtocol.HTTP)
    argv = client_argv(target, spec(count=4))[3:]
    argv[argv.index("http://198.19.0.50:80/")] = f"http://127.0.0.1:{port}/"
    printed: list[str] = []
    async with server:
        await asyncio.to_thread(run_client, build_parser().parse_args(argv), printed.append)
    assert len(printed) == 4 and all("\n" not in line for line in printed)
    run = await finished(
        ProbeRunner(view, limits(), remote=FakeRemote(printed), origins=BOTH).start(spec(count=4))
    )
    assert [o.seq for o in run.results] == [1, 2, 3, 4]
    # The JSON reply names no pod exactly; the banner reply claims web-2 (as a backend may): one outcome
    # each, no error kind and no other pod taken from the reply's extra lines.
    assert [(o.pod, o.error) for o in run.results] == [(None, None), ("web-2", None)] * 2
    assert run.summary().unattributed == 2


class Stepped(FakeRemote):
    """A remote whose client prints one line, then waits for ``more`` before the rest (a live pod)."""

    def __init__(self, lines: Sequence[str]) -> None:
        super().__init__(lines)
        self.more = asyncio.Event()

    async def _lines(self) -> AsyncGenerator[str, None]:
        try:
            yield self.lines[0]
            await self.more.wait()
            for line in self.lines[1:]:
                yield line
        finally:
            self.closed += 1


async def test_outcomes_arrive_while_the_client_runs() -> None:
    remote = Stepped([record_line(1, "web-0"), record_line(2, "web-1")])
    run = ProbeRunner(web_view(), limits(), remote=remote, origins=BOTH).start(spec(count=2))
    await first_result(run)
    assert not run.finished and run.results[0].pod == "web-0"
    remote.more.set()
    await finished(run)
    assert [o.pod for o in run.results] == ["web-0", "web-1"] and run.status == RunStatus.DONE


@pytest.mark.parametrize(
    ("address", "refused", "words"),
    [
        ("198.18.254.7", {"hosts": {"198.18.254.7"}}, "node's address"),
        ("198.18.254.7", {"gateways": {"198.18.254.7"}}, "gateway"),
        ("198.18.255.1", {}, "apiserver"),  # web_view's apiserver endpoint
    ],
)
async def test_a_mid_run_switch_to_a_refused_address_stops_the_client(
    address: str, refused: dict[str, set[str]], words: str
) -> None:
    view = web_view()
    remote = Stepped([record_line(1, "web-0"), record_line(2, "web-1")])
    run = ProbeRunner(view, limits(), remote=remote, origins=BOTH).start(spec(count=2))
    await first_result(run)
    # A selector-less Service's slice rewritten by hand.
    view.hosts |= refused.get("hosts", set())
    view.gateways |= refused.get("gateways", set())
    view.set_endpoints(WEB, [("web-0", address)], view.slices[WEB][0].ports, watched=False)
    await finished(run)
    assert run.status == RunStatus.FAILED and run.error is not None
    assert "stopped mid-run" in run.error and words in run.error
    assert remote.closed == 1  # the pod deleted / the exec closed
    assert len(run.results) == 1


async def test_origins_write_only_where_allowed() -> None:
    remote = FakeRemote([record_line(1, "web-0")])
    remote.refused[(Write.PROBE_POD, "")] = "probe pods run only in svcscope"
    remote.refused[(Write.POD_EXEC, NS)] = f"namespace {NS} is not writable"
    runner = ProbeRunner(web_view(), limits(), remote=remote, origins=BOTH)
    with pytest.raises(ForbiddenAddress, match="only in svcscope"):
        runner.start(spec())
    with pytest.raises(ForbiddenAddress, match="not writable"):
        runner.start(spec(origin=Origin.EXEC, exec_pod="web-2"))
    assert remote.calls == []


async def test_a_failed_client_fails_the_run_with_its_message() -> None:
    class Refused(Exception):
        message = "the dashboard's ServiceAccount may not create pods in svcscope"

    class Failing(FakeRemote):
        async def _lines(self) -> AsyncGenerator[str, None]:
            raise Refused("with an internal https://198.19.0.1:443/api/v1/... URL")
            yield ""  # an async generator

    run = await finished(ProbeRunner(web_view(), limits(), remote=Failing([]), origins=BOTH).start(spec()))
    assert run.status == RunStatus.FAILED and run.error == Refused.message


async def test_runs_know_their_client() -> None:
    """Comparing origins needs to know which client kube-proxy saw: the pod (and IP) per origin."""
    view: FakeView = web_view()
    remote = FakeRemote([record_line(1, "web-0")])
    runner = ProbeRunner(view, limits(), remote=remote, origins=BOTH)
    run = await finished(runner.start(spec(count=1)))
    assert run.client_pod == f"svcscope-probe-{run.id}" and remote.names == [run.client_pod]
    # The probe pod is not in the watch here (a short run can end before it is): its address and node come
    # from the pod as read when it started.
    assert (run.client_ip, run.client_node) == (remote.started_ip, "node-1")
    run = await finished(runner.start(spec(origin=Origin.EXEC, exec_pod="web-2", count=1)))
    assert run.client_pod == "web-2" and run.client_ip == view.pods[ObjectKey(NS, "web-2")].pod_ip


async def test_a_probe_pod_gone_before_its_address_was_read_is_known_by_its_own_records() -> None:
    """A 10-request pod can have finished (Succeeded, no IP any more) when its status is first read; the
    client's records carry its own end of each connection."""
    remote = FakeRemote([record_line(i, "web-0", local=f"198.18.0.42:{40000 + i}") for i in (1, 2)])
    remote.started_ip = None
    run = await finished(ProbeRunner(web_view(), limits(), remote=remote, origins=BOTH).start(spec(count=2)))
    assert run.status == RunStatus.DONE and run.client_ip == "198.18.0.42"
    remote = FakeRemote([record_line(1, "web-0", local="198.18.0.42:40001")])
    run = await finished(ProbeRunner(web_view(), limits(), remote=remote, origins=BOTH).start(spec(count=1)))
    assert run.client_ip == remote.started_ip  # what the pod said when it started is kept


async def test_the_node_origin_runs_a_host_network_probe_pod_and_tallies_what_the_server_saw() -> None:
    lines = [record_line(i, "web-0", peer=f"198.18.0.1:{4000 + i}") for i in (1, 2, 3)]
    remote = FakeRemote(lines)
    remote.started_ip = "198.18.255.1"  # a hostNetwork pod has its node's address
    runner = ProbeRunner(web_view(), limits(), remote=remote, origins=(Origin.NODE,))
    run = await finished(runner.start(spec(count=3, origin=Origin.NODE, node="svcscope-dc")))
    assert run.status == RunStatus.DONE and remote.host_network == [True] and remote.nodes == ["svcscope-dc"]
    seen = run.summary().seen
    assert seen is not None and seen.peers == (("198.18.0.1", 3),)
    assert run.client_ip == "198.18.255.1" and seen.snat is True  # the server saw another source
    plain = FakeRemote(lines)
    plain.started_ip = "198.18.0.1"  # the address the server saw: no source NAT claimed
    pod_runner = ProbeRunner(web_view(), limits(), remote=plain, origins=(Origin.PROBE_POD,))
    pod_run = await finished(pod_runner.start(spec(count=3)))
    assert plain.host_network == [False]
    pod_seen = pod_run.summary().seen
    assert pod_seen is not None and pod_seen.snat is False
