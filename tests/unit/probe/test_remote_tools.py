"""The exec origin in any pod: it first looks for a client tool, then reads the tool loop's lines as
outcomes attributed by the dashboard; no shell or no tool fails the run with words naming what is missing."""

from __future__ import annotations

import pytest

from app.domain import Origin
from app.probe import toolclient as tc
from app.probe.run import RunStatus
from app.probe.runner import ProbeRunner
from app.probe.spec import ProbeSpec, SpecError
from app.probe.targets import ForbiddenAddress
from app.writepolicy import Write
from tests.unit.fakes import NS, FakeRemote, limits, make_pod, record_line, web_view
from tests.unit.probe.test_remote import finished

pytestmark = pytest.mark.timeout(30)
ORIGINS = (Origin.PROBE_POD, Origin.EXEC)
BUSYBOX = "wget nc head od tr sleep date"


def spec(**kw: object) -> ProbeSpec:
    base: dict[str, object] = {
        "namespace": NS,
        "service": "web",
        "port": "http",
        "count": 4,
        "concurrency": 1,
        "origin": Origin.EXEC,
        "exec_pod": "web-2",
    }
    base.update(kw)
    return ProbeSpec(**base)  # type: ignore[arg-type]


def tag_of(remote: FakeRemote) -> str:
    """The run's tag, as the loop got it (the 7th argument after the script)."""
    (_, _, argv) = remote.calls[0]
    return argv[10]


class LoopRemote(FakeRemote):
    """A pod whose loop prints ``replies`` (seq -> (output, rc)) under the run's own tag."""

    def __init__(self, tools: str | None, replies: dict[int, tuple[bytes, int]], *extra: str) -> None:
        super().__init__([], tools=tools)
        self.replies = replies
        self.extra = extra

    def exec_in_pod(self, namespace, pod, argv, budget_s, *, container=None):
        stream = super().exec_in_pod(namespace, pod, argv, budget_s, container=container)
        if argv and list(argv) != tc.detect_argv():
            tag = argv[10] if argv[0] == "sh" else argv[7]
            self.lines = [*self.extra]
            self.lines += [f"{tag} {seq} {out.hex()} {rc} 2500" for seq, (out, rc) in self.replies.items()]
            self.lines.append(f"{tag} end")
        return stream


def reply(pod: str) -> bytes:
    return f'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{{"pod": "{pod}"}}'.encode()


async def test_busybox_wget_replies_are_attributed_by_the_dashboard() -> None:
    wget_out = b'  HTTP/1.1 200 OK\n  Content-Type: application/json\n{"pod": "web-1"}'
    remote = LoopRemote(
        BUSYBOX,
        {
            1: (wget_out, 0),
            2: (b"wget: can't connect to remote host (x): Connection refused", 1),
            3: (b"", 143),
        },
        "a reply line that is no line of the run: ignored",
    )
    run = await finished(ProbeRunner(web_view(), limits(), remote=remote, origins=ORIGINS).start(spec()))
    assert run.status is RunStatus.DONE, run.error
    assert remote.detections == [(NS, "web-2", None)]
    (_, _, argv) = remote.calls[0]
    assert argv[:4] == ["sh", "-c", tc.RUN_SCRIPT, "svcscope"] and argv[4:6] == ["wget", "HTTP"]
    by_seq = {o.seq: o for o in run.results}
    assert by_seq[1].pod == "web-1" and by_seq[1].status == 200 and by_seq[1].latency_ms == 2.5
    assert by_seq[2].error == "refused" and "Connection refused" in (by_seq[2].reason or "")
    assert by_seq[3].error == "timeout"
    assert by_seq[4].error == "no_output"  # the loop printed nothing for it
    note = run.calibration.note
    assert "client tools found: nc, wget" in note and "sent with wget" in note
    assert "wget -q -S -O - http://198.19.0.50:80/" in note and "/proc/uptime" in note


async def test_curl_and_a_forged_line_count_once() -> None:
    remote = LoopRemote(f"curl {BUSYBOX} date-ns", {1: (reply("web-0"), 0), 2: (reply("web-2"), 0)})
    run = await finished(
        ProbeRunner(web_view(), limits(), remote=remote, origins=ORIGINS).start(spec(count=2))
    )
    assert [(o.seq, o.pod) for o in sorted(run.results, key=lambda o: o.seq)] == [(1, "web-0"), (2, "web-2")]
    assert "curl -sS -i --max-time 2 -H 'Connection: close' http://198.19.0.50:80/" in run.calibration.note
    assert "date +%s%N" in run.calibration.note


async def test_python3_only_runs_the_python_loop() -> None:
    remote = LoopRemote("python3", {1: (reply("web-0"), 0)})
    run = await finished(
        ProbeRunner(web_view(), limits(), remote=remote, origins=ORIGINS).start(spec(count=1))
    )
    (_, _, argv) = remote.calls[0]
    assert argv[:3] == ["python3", "-c", tc.PY_SCRIPT]
    assert run.status is RunStatus.DONE and run.results[0].pod == "web-0"


async def test_svcscope_image_keeps_the_echo_client() -> None:
    remote = FakeRemote([])  # its default tools: svcscope's image
    await finished(ProbeRunner(web_view(), limits(), remote=remote, origins=ORIGINS).start(spec(count=1)))
    (_, _, argv) = remote.calls[0]
    assert argv[:4] == ["python3", "-m", "app.echo", "client"]


async def test_a_container_without_a_shell_gets_the_clear_message() -> None:
    remote = FakeRemote([], tools=None)
    run = await finished(ProbeRunner(web_view(), limits(), remote=remote, origins=ORIGINS).start(spec()))
    assert run.status is RunStatus.FAILED
    assert run.error == f"{NS}/web-2: {tc.NO_SHELL}"
    assert remote.calls == []  # nothing else was run


async def test_a_container_without_a_tool_names_what_was_looked_for() -> None:
    remote = FakeRemote([], tools="head od tr")
    run = await finished(ProbeRunner(web_view(), limits(), remote=remote, origins=ORIGINS).start(spec()))
    assert run.status is RunStatus.FAILED and remote.calls == []
    assert run.error == (
        f"{NS}/web-2: this container has no client for HTTP: looked for svcscope's echo client, curl, wget, "
        "python3, nc, bash"
    )


async def test_keepalive_needs_svcscope_client() -> None:
    remote = FakeRemote([], tools=f"curl {BUSYBOX}")
    run = await finished(
        ProbeRunner(web_view(), limits(), remote=remote, origins=ORIGINS).start(spec(reuse=True))
    )
    assert run.status is RunStatus.FAILED and "opens a new connection per request" in (run.error or "")


async def test_a_pod_of_another_writable_namespace_and_its_container() -> None:
    view = web_view()
    toolbox = make_pod("toolbox", "198.18.0.77", namespace="tools")
    view.pods[toolbox.key] = toolbox
    remote = LoopRemote(f"curl {BUSYBOX}", {1: (reply("web-0"), 0)})
    runner = ProbeRunner(view, limits(), remote=remote, origins=ORIGINS)
    run = await finished(
        runner.start(spec(count=1, exec_pod="toolbox", exec_namespace="tools", exec_container="shell"))
    )
    assert run.status is RunStatus.DONE and run.results[0].pod == "web-0"
    assert remote.detections == [("tools", "toolbox", "shell")] and remote.calls[0][:2] == (
        "tools",
        "toolbox",
    )
    assert (run.client_pod, run.client_ip) == ("toolbox", "198.18.0.77")


async def test_a_pod_outside_the_writable_namespaces_is_refused_before_any_exec() -> None:
    remote = FakeRemote([])
    remote.refused[(Write.POD_EXEC, "kube-system")] = "kube-system is one of the cluster's own namespaces"
    runner = ProbeRunner(web_view(), limits(), remote=remote, origins=ORIGINS)
    with pytest.raises(ForbiddenAddress, match="cluster's own namespaces"):
        runner.start(spec(exec_namespace="kube-system", exec_pod="coredns-1"))
    with pytest.raises(SpecError, match="not a watched running pod"):
        runner.start(spec(exec_namespace="other", exec_pod="nope"))
    assert remote.detections == [] and remote.calls == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"exec_pod": "Bad_Pod"}, "exec_pod 'Bad_Pod' is not a valid name"),
        ({"exec_namespace": "a.b"}, "exec_namespace 'a.b' is not a valid name"),
        ({"exec_container": "-x"}, "exec_container '-x' is not a valid name"),
        (
            {"origin": Origin.PROBE_POD, "exec_pod": None, "node": "node_1"},
            "node 'node_1' is not a valid name",
        ),
        ({"node": "node-1"}, "node applies to origins probe-pod and node only"),
        ({"origin": Origin.DASHBOARD, "concurrency": 1}, "apply to origin exec only"),
    ],
)
def test_names_are_checked(fields: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        spec(**fields).validated(limits())


async def test_a_probe_pod_goes_to_the_chosen_node() -> None:
    remote = FakeRemote([record_line(1, "web-0")])
    runner = ProbeRunner(web_view(), limits(), remote=remote, origins=ORIGINS)
    run = await finished(runner.start(spec(origin=Origin.PROBE_POD, exec_pod=None, count=1, node=" node-2 ")))
    assert run.status is RunStatus.DONE and remote.nodes == ["node-2"] and run.spec.node == "node-2"
