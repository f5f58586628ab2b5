"""The probe runner: admits runs (limits, rate, enabled origins), keeps the recent ones, cancels them.

With a sink factory (the run store) every run is recorded as it goes; then only the newest few finished
runs keep their per-request results in memory, older ones are trimmed to their frozen summary (a list
entry) and read back from the store when shown. Runs still going when the runner closes end as
"interrupted", never as "running".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence

from app.domain import PROBE_POD_ORIGINS, ObjectKey, Origin
from app.probe.attribution import Rule, RuleError, parse_rule
from app.probe.calibrate import calibrate
from app.probe.engine import Dial, worker
from app.probe.remote import RemoteFailed, RemoteProber, execute_remote, refusal
from app.probe.run import Run, RunStatus, new_run_id
from app.probe.sink import SinkFactory
from app.probe.spec import Limits, ProbeSpec, RunLimitError, SpecError
from app.probe.targets import ClusterView, ForbiddenAddress, ProbeTarget, resolve

log = logging.getLogger(__name__)

RATE_WINDOW_S = 60.0  # Limits.per_minute counts the runs started in this window
FINISHED_IN_MEMORY = 4  # finished runs that keep their results in memory when a store has them too


class ProbeRunner:
    """Starts, bounds, keeps and cancels runs."""

    def __init__(
        self,
        view: ClusterView,
        limits: Limits,
        *,
        clock: Callable[[], float] = time.monotonic,
        dial: Dial | None = None,
        remote: RemoteProber | None = None,
        origins: Sequence[Origin] = (),
        dashboard_pod: str | None = None,
        dashboard_ip: str | None = None,
        dashboard_node: str | None = None,
        probe_pod_namespace: str | None = None,
        sinks: SinkFactory | None = None,
    ) -> None:
        """``dial`` maps a checked target address to the socket address to connect to (a test seam);
        ``clock`` times admission and runs (a test seam); ``dashboard_pod``/``dashboard_ip`` name this
        process's pod (the client of "dashboard" runs) and ``dashboard_node`` its node (whose kube-proxy
        those runs meet); ``probe_pod_namespace`` is where probe pods run (their node is read from there);
        ``sinks`` opens where each run is recorded."""
        self.view = view
        self.limits = limits
        self._clock = clock
        self._dial: Dial = dial or (lambda host, port: (host, port))
        self.remote = remote
        self.origins = (Origin.DASHBOARD, *(o for o in origins if o is not Origin.DASHBOARD and remote))
        self._runs: OrderedDict[str, Run] = OrderedDict()
        self._starts: deque[float] = deque()
        self._dashboard = (dashboard_pod, dashboard_ip)
        self._dashboard_node = dashboard_node
        self._probe_pod_namespace = probe_pod_namespace
        self._sinks = sinks
        self._closing = False
        self._cancelled: set[asyncio.Task[None]] = set()
        # Requests in flight across the dashboard's own runs (each run's concurrency is its own bound too).
        self._in_flight = asyncio.Semaphore(limits.max_in_flight)

    def use_sinks(self, sinks: SinkFactory) -> None:
        """Record every run started from now on (set before the first run)."""
        self._sinks = sinks

    def restore(self, runs: Sequence[Run]) -> None:
        """Runs read back at start-up (finished, oldest first): listed like the runs of this process."""
        for run in runs:
            if run.finished and run.id not in self._runs:
                self._runs[run.id] = run
        self._evict()

    def get(self, run_id: str) -> Run | None:
        return self._runs.get(run_id)

    def runs(self) -> list[Run]:
        return list(reversed(self._runs.values()))

    @property
    def active(self) -> int:
        return sum(1 for r in self._runs.values() if not r.finished)

    def start(self, spec: ProbeSpec) -> Run:
        """Validate and start a run; raises SpecError, TargetError or RunLimitError."""
        prepared = self._prepare(spec)
        self._admit(1)
        return self._launch(*prepared)

    def start_many(self, specs: Sequence[ProbeSpec]) -> list[Run]:
        """Start one run per spec together (a fan-out: one client each), or none of them.

        Every spec is checked first. Together they take the place of one active run when they start
        (their number is bounded by whoever builds them), and each counts against the runs per minute."""
        prepared = [self._prepare(spec) for spec in specs]
        self._admit(len(prepared))
        return [self._launch(*p) for p in prepared]

    def _prepare(self, spec: ProbeSpec) -> tuple[ProbeSpec, ProbeTarget, Rule | None]:
        spec = spec.validated(self.limits)
        key = ObjectKey(spec.namespace, spec.service)
        target = resolve(self.view, key, spec.port, spec.protocol)
        self._check_origin(spec)
        rule_text = spec.identity or target.identity_annotation
        rule: Rule | None = None
        if rule_text:
            try:
                rule = parse_rule(rule_text)
            except RuleError as exc:
                origin = "identity" if spec.identity else "annotation svcscope.io/pod-identity"
                raise SpecError(f"{origin}: {exc}") from exc
        return spec, target, rule

    def _launch(self, spec: ProbeSpec, target: ProbeTarget, rule: Rule | None) -> Run:
        self._starts.append(self._clock())
        run = Run(new_run_id(), spec, target, rule, self.view, clock=self._clock)
        self._set_client(run)
        run.current()
        self._runs[run.id] = run
        self._evict()
        run.task = asyncio.create_task(self._execute(run), name=f"probe-run-{run.id}")
        # A task cancelled before its first step never runs _execute's handlers.
        run.task.add_done_callback(lambda _: run.finish(RunStatus.CANCELLED))
        return run

    def _admit(self, count: int) -> None:
        """Room for ``count`` more runs this minute and for one more active run, or RunLimitError."""
        now = self._clock()
        while self._starts and now - self._starts[0] > RATE_WINDOW_S:
            self._starts.popleft()
        if len(self._starts) + count > self.limits.per_minute:
            raise RunLimitError(f"at most {self.limits.per_minute} probe runs per minute; try again shortly")
        if self.active >= self.limits.max_active:
            raise RunLimitError(f"{self.active} probe runs are active (limit {self.limits.max_active})")

    def _check_origin(self, spec: ProbeSpec) -> None:
        if spec.origin not in self.origins:
            raise SpecError(
                f"origin {spec.origin.value!r} is not enabled "
                f"(enabled: {', '.join(o.value for o in self.origins)}); "
                "see SVCSCOPE_PROBE_ORIGINS and the chart's probe RBAC values"
            )
        if spec.origin is Origin.DASHBOARD:
            return
        if spec.concurrency != 1:
            raise SpecError(f"origin {spec.origin.value} sends one request at a time: set concurrency to 1")
        if self.remote is not None and (reason := refusal(self.remote, spec)):
            raise ForbiddenAddress(reason)  # where the origin would write is not allowed (403)
        if spec.method != "GET" or spec.identity:
            raise SpecError(f"origin {spec.origin.value} supports GET without an identity rule only")
        if spec.origin is Origin.EXEC:
            if not spec.exec_pod:
                raise SpecError("origin exec needs exec_pod: a running pod (exec_namespace: its namespace)")
            pod = self.view.pod(ObjectKey(spec.exec_in, spec.exec_pod))
            if pod is None or pod.phase != "Running":
                raise SpecError(f"pod {spec.exec_in}/{spec.exec_pod} is not a watched running pod")

    def _set_client(self, run: Run) -> None:
        spec = run.spec
        if spec.origin is Origin.DASHBOARD:
            run.client_pod, run.client_ip = self._dashboard
            run.client_node = self._dashboard_node
        elif spec.origin in PROBE_POD_ORIGINS:
            run.client_pod = f"svcscope-probe-{run.id}"  # its IP is known only while it runs
            run.client_namespace = self._probe_pod_namespace  # its node too, once it is scheduled
            run.client_node = spec.node  # a pinned pod's node is known before it starts
        elif spec.exec_pod:
            pod = self.view.pod(ObjectKey(spec.exec_in, spec.exec_pod))
            run.client_pod, run.client_ip = spec.exec_pod, pod.pod_ip if pod else None
            run.client_namespace = spec.namespace

    def cancel(self, run_id: str) -> bool:
        run = self._runs.get(run_id)
        if run is None or run.finished or run.task is None:
            return False
        run.task.cancel()
        return True

    async def aclose(self) -> None:
        """End every run as interrupted and wait until each has recorded its end.

        Safe to call twice and to cancel: a run is cancelled once (a second cancel would cut its last
        write short), and waiting does not cancel the runs' tasks."""
        self._closing = True
        tasks = [r.task for r in self._runs.values() if r.task is not None and not r.task.done()]
        for t in tasks:
            if t not in self._cancelled:
                self._cancelled.add(t)
                t.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def _evict(self) -> None:
        while len(self._runs) > self.limits.kept:
            victim = next((k for k, r in self._runs.items() if r.finished), None)
            if victim is None:
                break
            del self._runs[victim]
        self._trim()

    def _trim(self) -> None:
        """Keep the results of the newest finished runs only; the store has the others'."""
        full = 0
        for run in reversed(self._runs.values()):
            if not run.finished or not run.complete:
                continue
            recording = run.task is not None and not run.task.done()  # its end is still being written
            if recording or full < FINISHED_IN_MEMORY or not run.sink.saved:
                full += 1
                continue
            run.trim()

    async def _execute(self, run: Run) -> None:
        if self._sinks is not None:
            run.sink = await self._sinks(run)
        try:
            await self._steps(run)
        finally:
            await run.sink.close(run)
            self._trim()

    def _note_attribution(self, run: Run) -> None:
        cal = run.calibration
        run.sink.note_attribution(cal.mode.value, cal.note, run.rule.label if run.rule else None)

    async def _steps(self, run: Run) -> None:
        workers: list[asyncio.Task[None]] = []
        try:
            async with asyncio.timeout(self.limits.run_deadline_s):
                if run.spec.origin is not Origin.DASHBOARD:
                    assert self.remote is not None  # _check_origin enables other origins only with one
                    run.sink.note_started(time.time())
                    await execute_remote(run, self.remote)
                    self._note_attribution(run)
                    run.finish(RunStatus.DONE)
                    return
                if run.rule is None:
                    await calibrate(run, self.view, self._dial)
                self._note_attribution(run)
                run.in_flight_cap = self.limits.max_in_flight
                run.restart_clock()
                run.sink.note_started(time.time())
                workers = [
                    asyncio.create_task(worker(run, self._dial, self._in_flight), name=f"probe-{run.id}-{i}")
                    for i in range(run.spec.concurrency)
                ]
                await asyncio.gather(*workers)
            run.finish(RunStatus.DONE)
        except asyncio.CancelledError:
            if self._closing:
                self._note_attribution(run)
                run.finish(RunStatus.INTERRUPTED, interrupted_message(run.done, run.spec.count))
            else:
                run.finish(RunStatus.CANCELLED)
        except (ForbiddenAddress, RemoteFailed) as exc:
            run.finish(RunStatus.FAILED, exc.message)
        except TimeoutError:
            run.finish(RunStatus.TIMED_OUT, f"run exceeded {self.limits.run_deadline_s:.0f} s")
        except Exception as exc:  # a bug must not leave the run "running" forever
            log.exception("probe run %s failed", run.id)
            run.finish(RunStatus.FAILED, f"{type(exc).__name__}: {exc}")
        finally:
            for w in workers:
                w.cancel()
            if workers:
                await asyncio.gather(*workers, return_exceptions=True)


def interrupted_message(done: int, total: int) -> str:
    """The same words the store uses for a run cut short by a crash."""
    return f"interrupted at {done}/{total}: svcscope stopped while the run was going on"
