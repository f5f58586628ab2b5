"""Probes from other origins: a client runs in a pod (a probe pod, or exec into an existing pod) and prints
one line per request as soon as it is done; those lines become the run's outcomes while it still sends.

A probe pod runs svcscope's echo client, which prints JSON records (``app.echo.record``): the pod a reply
names, or the reply's start, which the dashboard attributes as its own replies. Exec works in
any pod: one short exec first finds out which client the container has (``app.probe.toolclient``); a pod
of svcscope's image runs the echo client, any other pod the loop that sends with its curl, wget, nc,
python3 or bash, whose replies the dashboard attributes itself.

The records are the only thing read from the client's output. A backend's reply reaches them only as
escaped field values, so a reply with newlines and ``ERROR …`` lines cannot add or change an outcome:
anything that is not a well-formed record, a duplicate, or a sequence number outside the run is ignored.
While the client runs, the Service's endpoints are re-read as for the dashboard's own runs; if they turn
to an address svcscope never probes, the client is stopped (the pod deleted, the exec closed) and the run
fails with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import secrets
import shlex
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Protocol

from app.domain import PROBE_POD_ORIGINS, Origin
from app.echo.record import Record, parse_line
from app.kube.waiting import reporting_to
from app.probe import toolclient
from app.probe.attribution import Reply
from app.probe.run import AttributionMode, Run, sample_of
from app.probe.seen import address_of
from app.probe.spec import ProbeSpec
from app.probe.stats import Outcome
from app.probe.targets import ForbiddenAddress, ProbeProtocol, ProbeTarget
from app.writepolicy import Write

# How the echo client is told which protocol to speak.
CLIENT_FLAGS = {ProbeProtocol.HTTP: "--url", ProbeProtocol.TCP: "--tcp", ProbeProtocol.UDP: "--udp"}
CHECK_INTERVAL_S = 0.25  # how often the endpoints are re-checked while a remote client runs
CLIENT_SLACK_S = 5.0  # the client's own deadline beyond count x timeout (start-up, the last reply)
DETECT_BUDGET_S = 15.0  # the exec that looks for a client tool
DETECT_MAX_LINES = 20  # of its output: it prints one
# A tool starts a process per request (fork, exec, dynamic loading): time for that beyond the timeout.
TOOL_START_S = 0.2


class RemoteFailed(Exception):
    """The remote client could not run or be read (RBAC, a pod that never started ...), in plain words."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RemoteProber(Protocol):
    """Runs the echo client elsewhere in the cluster (``app.kube.actions.KubeActions``); both methods are
    async generators of the client's output lines, and clean up (delete the pod, close the exec) when
    closed early."""

    def refusal(self, write: Write, namespace: str, name: str) -> str | None: ...

    def probe_pod(
        self,
        argv: Sequence[str],
        budget_s: float,
        *,
        name: str | None = None,
        node: str | None = None,
        host_network: bool = False,
        started: Callable[[str | None, str | None], None] | None = None,
    ) -> AsyncGenerator[str, None]: ...

    def exec_in_pod(
        self,
        namespace: str,
        pod: str,
        argv: Sequence[str],
        budget_s: float,
        *,
        container: str | None = None,
    ) -> AsyncGenerator[str, None]: ...


def _note_client(run: Run, ip: str | None, node: str | None) -> None:
    """A probe pod's address and node as read when it started: a short run can end before the watch
    reports them, and the pod is deleted then."""
    if ip and run.client_ip is None:
        run.client_ip = ip
    if node and run.client_node is None:
        run.client_node = node


def client_budget_s(spec: ProbeSpec) -> float:
    return spec.count * spec.timeout_s + CLIENT_SLACK_S


def client_argv(target: ProbeTarget, spec: ProbeSpec) -> list[str]:
    """``python3 -m app.echo client`` arguments for the target (the ClusterIP, never another address).
    The client stops by itself after count x timeout; the probe pod's deadline caps it further."""
    hostport = target.label
    budget = client_budget_s(spec)
    argv = [
        "python3",
        "-m",
        "app.echo",
        "client",
        "--format",
        "json",
        "--count",
        str(spec.count),
        "--timeout",
        str(spec.timeout_s),
        "--deadline",
        f"{budget:g}",
    ]
    if spec.protocol is ProbeProtocol.HTTP:
        argv += [CLIENT_FLAGS[spec.protocol], f"http://{hostport}{spec.path}"]
        if spec.reuse:
            argv.append("--keepalive")
    else:
        argv += [CLIENT_FLAGS[spec.protocol], hostport]
    return argv


def refusal(remote: RemoteProber, spec: ProbeSpec) -> str | None:
    """Why the run's origin may not write where it would (probe pods only in the dashboard's namespace,
    exec only in a writable namespace), or None."""
    if spec.origin in PROBE_POD_ORIGINS:
        return remote.refusal(Write.PROBE_POD, "", "probe pod")
    if spec.origin is Origin.EXEC and spec.exec_pod:
        return remote.refusal(Write.POD_EXEC, spec.exec_in, spec.exec_pod)
    return None


class RecordReader:
    """Turns the client's output lines into the run's outcomes: exactly one per sequence number."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.seen: set[int] = set()

    def feed(self, line: str) -> bool:
        """Add the outcome the line records; False (and nothing added) for anything else."""
        record = parse_line(line.strip())
        if record is None or not 1 <= record.seq <= self.run.spec.count or record.seq in self.seen:
            return False
        self.seen.add(record.seq)
        self.run.peers.note(record.peer)
        if record.local and self.run.client_ip is None:
            # The client's own end of the connection: its address even when the probe pod finished before
            # its status was read (a 10-request pod can be Succeeded, without an IP, at the first read).
            self.run.client_ip = address_of(record.local)
        self.run.add(self._outcome(record))
        return True

    def _outcome(self, record: Record) -> Outcome:
        # The record arrives when its request is done: it started its latency earlier.
        elapsed_ms = (self.run.clock() - self.run.started) * 1000.0
        at_ms = max(elapsed_ms - (record.latency_ms or 0.0), 0.0)
        conn = record.conn or record.seq
        if record.error is not None:
            return Outcome(
                record.seq, None, record.error, record.latency_ms, conn, status=record.status, at_ms=at_ms
            )
        pod = self.run.pod_named(record.identity) if record.identity else None
        reason = None
        method = "auto" if pod else None
        if pod is None and record.excerpt is not None:
            # A backend other than svcscope's echo: its reply is attributed here, as the dashboard's own.
            who = self.run.attribute(Reply(body=record.excerpt.encode(), status=record.status))
            pod, reason = who.pod, who.reason
            method = who.method.value if who.method else None
        elif pod is None:
            said = repr(record.identity[:60]) if record.identity else "no identity"
            reason = f"the client reported {said}, which is no current endpoint's pod"
        return Outcome(
            record.seq,
            pod,
            None,
            record.latency_ms,
            conn,
            reason=reason,
            method=method,
            status=record.status,
            at_ms=at_ms,
        )

    def missing(self) -> None:
        """An outcome for every request the client printed nothing for."""
        for seq in range(1, self.run.spec.count + 1):
            if seq not in self.seen:
                self.seen.add(seq)
                self.run.add(
                    Outcome(seq, None, "no_output", None, seq, reason="the client printed no record")
                )


class ToolReader:
    """Turns the lines of a tool loop (``app.probe.toolclient``) into outcomes, one per sequence number;
    the dashboard attributes each reply as it does its own."""

    def __init__(self, run: Run, tool: toolclient.Tool, tag: str) -> None:
        self.run = run
        self.tool = tool
        self.tag = tag
        self.seen: set[int] = set()
        self.stopped_by_deadline = False

    def feed(self, line: str) -> bool:
        parsed = toolclient.parse_line(line.strip(), self.tag)
        if isinstance(parsed, toolclient.Stop):
            self.stopped_by_deadline = parsed.deadline
            return False
        if parsed is None or not 1 <= parsed.seq <= self.run.spec.count or parsed.seq in self.seen:
            return False
        self.seen.add(parsed.seq)
        self.run.add(*self._outcome(parsed))
        return True

    def _outcome(self, line: toolclient.Line) -> tuple[Outcome, str | None]:
        latency_ms = line.micros / 1000.0
        at_ms = max((self.run.clock() - self.run.started) * 1000.0 - latency_ms, 0.0)
        result = toolclient.result_of(self.tool, self.run.spec.protocol, line)
        if result.reply is None:
            kind = result.error or "error"
            return Outcome(
                line.seq, None, kind, latency_ms, line.seq, reason=result.detail, at_ms=at_ms
            ), None
        who = self.run.attribute(result.reply)
        outcome = Outcome(
            line.seq,
            who.pod,
            None,
            latency_ms,
            line.seq,
            reason=who.reason,
            method=who.method.value if who.method else None,
            status=result.reply.status,
            at_ms=at_ms,
        )
        return outcome, sample_of(result.reply) if self.run.wants_sample(outcome) else None

    def missing(self) -> None:
        kind, reason = "no_output", "the tool loop printed no line for this request"
        if self.stopped_by_deadline:
            kind, reason = "deadline", "not sent: the loop's time in the pod ran out"
        for seq in range(1, self.run.spec.count + 1):
            if seq not in self.seen:
                self.seen.add(seq)
                self.run.add(Outcome(seq, None, kind, None, seq, reason=reason))


def tool_budget_s(spec: ProbeSpec) -> float:
    """How long the tool loop may run: each request's (whole-second) timeout and process start-up."""
    per_request = toolclient.whole_seconds(spec.timeout_s) + TOOL_START_S
    return math.ceil(spec.count * per_request + CLIENT_SLACK_S)


async def detect(remote: RemoteProber, spec: ProbeSpec) -> toolclient.Found:
    """Which client tools the exec pod's container has (one short exec); RemoteFailed in words if none."""
    assert spec.exec_pod is not None
    lines = remote.exec_in_pod(
        spec.exec_in, spec.exec_pod, toolclient.detect_argv(), DETECT_BUDGET_S, container=spec.exec_container
    )
    seen: list[str] = []
    try:
        async with contextlib.aclosing(lines):
            async for line in lines:
                seen.append(line)
                if len(seen) >= DETECT_MAX_LINES:
                    break
    except Exception as exc:
        message = getattr(exc, "message", None)
        if getattr(exc, "command_not_found", False):
            raise RemoteFailed(f"{spec.exec_in}/{spec.exec_pod}: {toolclient.NO_SHELL}") from exc
        if isinstance(message, str):
            raise RemoteFailed(message) from exc
        raise
    found = toolclient.parse_detection(seen)
    if found is None:
        raise RemoteFailed(
            f"{spec.exec_in}/{spec.exec_pod}: looking for a client tool printed nothing usable "
            f"({toolclient.NO_SHELL.split(':', 1)[1].strip()} if this keeps happening)"
        )
    return found


def exec_note(spec: ProbeSpec, found: toolclient.Found, tool: toolclient.Tool, shape: str, clock: str) -> str:
    """What the run page says about an exec run: what the container has, what sent, how to do it by hand."""
    have = ", ".join(sorted(t.value for t in found.tools)) or "none"
    where = f"{spec.exec_in}/{spec.exec_pod}"
    if spec.exec_container:
        where += f" (container {spec.exec_container})"
    how = "it reports the answering pod per request"
    if tool is not toolclient.Tool.SVCSCOPE:
        how = "svcscope matches each reply to a pod itself"
    return (
        f"exec into {where}: client tools found: {have}; sent with {tool.value}, one command per request: "
        f"{shape} — latency measured by {clock}; {how}"
    )


async def execute_remote(
    run: Run, remote: RemoteProber, *, check_interval_s: float = CHECK_INTERVAL_S
) -> None:
    """Run the client remotely and add outcomes as its lines arrive; ForbiddenAddress if the endpoints
    turn to a refused address meanwhile (the client is stopped first)."""
    spec = run.spec
    if reason := refusal(remote, spec):
        raise ForbiddenAddress(reason)
    budget = client_budget_s(spec)
    argv = client_argv(run.target, spec)
    run.calibration.mode = AttributionMode.AUTO
    run.calibration.note = (
        f"the echo client in a pod ({spec.origin.value}) reports the answering pod per request; a reply "
        "that does not name its pod is attributed by svcscope (a pod name or IP in its start)"
    )
    reader: RecordReader | ToolReader = RecordReader(run)
    if spec.origin in PROBE_POD_ORIGINS:
        lines = remote.probe_pod(
            argv,
            budget,
            name=run.client_pod,
            node=spec.node,
            host_network=spec.origin is Origin.NODE,
            started=functools.partial(_note_client, run),
        )
    else:
        assert spec.exec_pod is not None
        found = await detect(remote, spec)
        try:
            tool = toolclient.choose(found, spec.protocol)
        except toolclient.NoTool as exc:
            raise RemoteFailed(f"{spec.exec_in}/{spec.exec_pod}: {exc.message}") from exc
        if tool is toolclient.Tool.SVCSCOPE:
            run.calibration.note = exec_note(spec, found, tool, shlex.join(argv), "the echo client")
        else:
            if spec.reuse:
                raise RemoteFailed(
                    f"{spec.exec_in}/{spec.exec_pod} has no svcscope client: {tool.value} opens a new "
                    "connection per request, so 'reuse connections' cannot be probed from it"
                )
            tag = f"svcscope-{secrets.token_hex(8)}"
            budget = tool_budget_s(spec)
            plan = toolclient.plan(
                found,
                tool,
                spec.protocol,
                host=run.target.address,
                port=run.target.port.port,
                path=spec.path,
                count=spec.count,
                timeout_s=spec.timeout_s,
                deadline_s=budget,
                tag=tag,
            )
            argv = plan.argv
            reader = ToolReader(run, tool, tag)
            run.calibration.note = exec_note(spec, found, tool, plan.shape, plan.clock)
        lines = remote.exec_in_pod(spec.exec_in, spec.exec_pod, argv, budget, container=spec.exec_container)
    run.restart_clock()

    async def consume() -> None:
        async with contextlib.aclosing(lines):
            async for line in lines:
                reader.feed(line)
                if len(reader.seen) >= spec.count:
                    return

    with reporting_to(run.set_waiting):  # the task keeps the reporter: slow API calls show on the run
        task = asyncio.create_task(consume(), name=f"probe-{run.id}-remote")
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=check_interval_s)
            run.current()
            if run.forbidden:
                raise ForbiddenAddress(f"stopped mid-run: {run.forbidden}")
        task.result()
    except ForbiddenAddress:
        raise
    except Exception as exc:
        # The actions' errors carry a message meant for users (no URLs, no stack); anything else is a bug.
        message = getattr(exc, "message", None)
        if isinstance(message, str):
            raise RemoteFailed(message) from exc
        raise
    finally:
        if not task.done():
            task.cancel()  # closes the line stream: the pod is deleted, the exec closed
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    reader.missing()
