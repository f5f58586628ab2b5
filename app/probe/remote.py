"""Probes from other origins: the svcscope echo client runs in a pod and prints one line per request
(the answering pod's identity, or ``ERROR <kind>``); those lines become the run's outcomes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from app.domain import Origin
from app.kube.waiting import reporting_to
from app.probe.run import AttributionMode, Run
from app.probe.spec import ProbeSpec
from app.probe.stats import Outcome
from app.probe.targets import ProbeProtocol, ProbeTarget

# How the echo client is told which protocol to speak.
CLIENT_FLAGS = {ProbeProtocol.HTTP: "--url", ProbeProtocol.TCP: "--tcp", ProbeProtocol.UDP: "--udp"}


class RemoteProber(Protocol):
    """Runs the echo client elsewhere in the cluster (``app.kube.actions.KubeActions``)."""

    async def probe_pod(
        self, namespace: str, argv: Sequence[str], timeout_s: float, *, name: str | None = None
    ) -> list[str]: ...

    async def exec_in_pod(
        self, namespace: str, pod: str, argv: Sequence[str], timeout_s: float
    ) -> list[str]: ...


def client_argv(target: ProbeTarget, spec: ProbeSpec) -> list[str]:
    """``python3 -m app.echo client`` arguments for the target (the ClusterIP, never another address)."""
    hostport = target.label
    argv = [
        "python3",
        "-m",
        "app.echo",
        "client",
        "--count",
        str(spec.count),
        "--timeout",
        str(spec.timeout_s),
    ]
    if spec.protocol is ProbeProtocol.HTTP:
        argv += [CLIENT_FLAGS[spec.protocol], f"http://{hostport}{spec.path}"]
        if spec.reuse:
            argv.append("--keepalive")
    else:
        argv += [CLIENT_FLAGS[spec.protocol], hostport]
    return argv


async def execute_remote(run: Run, remote: RemoteProber) -> None:
    spec = run.spec
    argv = client_argv(run.target, spec)
    budget = spec.count * spec.timeout_s + 5
    run.calibration.mode = AttributionMode.AUTO
    run.calibration.note = (
        f"the echo client in a pod ({spec.origin.value}) reports the answering pod per request"
    )
    run.restart_clock()
    with reporting_to(run.set_waiting):  # slow API calls show on the run as "waiting for the apiserver"
        if spec.origin is Origin.PROBE_POD:
            lines = await remote.probe_pod(spec.namespace, argv, budget, name=run.client_pod)
        else:
            assert spec.exec_pod is not None
            lines = await remote.exec_in_pod(spec.namespace, spec.exec_pod, argv, budget)
    run.current()
    outcomes = [line.strip() for line in lines if line.strip()][: spec.count]
    for seq, line in enumerate(outcomes, start=1):
        conn = 1 if spec.reuse else seq
        if line.startswith("ERROR"):
            kind = line.removeprefix("ERROR").strip() or "error"
            run.add(Outcome(seq, None, kind, None, conn))
            continue
        pod = run.pod_named(line)
        reason = None if pod else f"the client reported {line[:60]!r}, which is no current endpoint's pod"
        run.add(Outcome(seq, pod, None, None, conn, reason=reason, method="auto" if pod else None))
    for seq in range(len(outcomes) + 1, spec.count + 1):
        run.add(Outcome(seq, None, "no_output", None, seq, reason="the client printed no line for it"))
