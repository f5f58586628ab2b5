"""Probe runs: send requests to a Service's ClusterIP from this process, attribute and publish results.

One task per in-flight request slot (``concurrency`` workers sharing one counter), a new connection
per request unless ``reuse``; the target and the endpoints come from the watch cache and are re-read
while the run goes on, so pods added mid-run are recognised. Results are appended to the run and
subscribers follow them with a cursor, so none is lost however slow the subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from app.config import Settings
from app.domain import ObjectKey
from app.probe import wire
from app.probe.attribution import (
    Attribution,
    Candidate,
    Fingerprints,
    Matcher,
    Reply,
    Rule,
    RuleError,
    attribute,
    parse_rule,
)
from app.probe.stats import Outcome, RunShape, Summary, summarize
from app.probe.targets import (
    Backend,
    ClusterView,
    ForbiddenAddress,
    ProbeProtocol,
    ProbeTarget,
    TargetError,
    backends,
    direct_target,
    forbidden_endpoint,
    resolve,
)

log = logging.getLogger(__name__)

METHODS = ("GET", "HEAD")
MAX_CALIBRATED_PODS = 64
SAMPLE_CHARS = 300
MAX_SAMPLES = 24
ENDPOINTS_MAX_AGE_S = 0.05  # requests re-read the endpoints from the cache at most this often
ATTRIBUTION_CACHE = 64  # distinct replies whose attribution a run remembers (cleared on endpoint changes)


class Origin(enum.StrEnum):
    """Where the requests come from (the mission's ways of testing from inside a cluster)."""

    DASHBOARD = "dashboard"  # this process, i.e. the dashboard's own pod
    PROBE_POD = "probe-pod"  # a short-lived pod of the svcscope image; results read from its log
    EXEC = "exec"  # `kubectl exec` into an existing pod that has the svcscope echo client


def parse_origins(names: Sequence[str]) -> tuple[Origin, ...]:
    """Enabled extra origins from settings; an unknown name is a configuration error."""
    try:
        return tuple(Origin(n.strip()) for n in names if n.strip() and n.strip() != Origin.DASHBOARD)
    except ValueError as exc:
        raise ValueError(f"SVCSCOPE_PROBE_ORIGINS: {exc}; use probe-pod and/or exec") from exc


class RemoteProber(Protocol):
    """Runs the echo client elsewhere in the cluster (``app.kube.actions.KubeActions``)."""

    async def probe_pod(
        self, namespace: str, argv: Sequence[str], timeout_s: float, *, name: str | None = None
    ) -> list[str]: ...

    async def exec_in_pod(
        self, namespace: str, pod: str, argv: Sequence[str], timeout_s: float
    ) -> list[str]: ...


class SpecError(ValueError):
    """Invalid probe parameters (HTTP 422)."""


class RunLimitError(Exception):
    """Too many active runs or runs per minute (HTTP 429)."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_count: int = 10_000
    max_concurrency: int = 256
    max_active: int = 4
    kept: int = 50
    per_minute: int = 30
    max_timeout_s: float = 30.0
    run_deadline_s: float = 900.0


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    namespace: str
    service: str
    port: str
    protocol: ProbeProtocol = ProbeProtocol.HTTP
    count: int = 100
    concurrency: int = 10
    reuse: bool = False
    method: str = "GET"
    path: str = "/"
    timeout_s: float = 2.0
    identity: str | None = None
    origin: Origin = Origin.DASHBOARD
    exec_pod: str | None = None  # origin exec: the pod (in the Service's namespace) to run the client in

    def validated(self, limits: Limits) -> ProbeSpec:
        if not 1 <= self.count <= limits.max_count:
            raise SpecError(f"count must be between 1 and {limits.max_count}")
        if not 1 <= self.concurrency <= limits.max_concurrency:
            raise SpecError(f"concurrency must be between 1 and {limits.max_concurrency}")
        if not 0.05 <= self.timeout_s <= limits.max_timeout_s:
            raise SpecError(f"timeout_s must be between 0.05 and {limits.max_timeout_s}")
        method = self.method.upper()
        if method not in METHODS:
            raise SpecError(f"method must be one of {', '.join(METHODS)}")
        try:
            path = wire.validate_path(self.path)
        except ValueError as exc:
            raise SpecError(str(exc)) from exc
        return ProbeSpec(
            namespace=self.namespace,
            service=self.service,
            port=str(self.port).strip(),
            protocol=self.protocol,
            count=self.count,
            concurrency=min(self.concurrency, self.count),
            reuse=self.reuse,
            method=method,
            path=path,
            timeout_s=self.timeout_s,
            identity=(self.identity or "").strip() or None,
            origin=self.origin,
            exec_pod=self.exec_pod,
        )


class RunStatus:
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


@dataclass(slots=True)
class Calibration:
    """Direct probes of each endpoint before the run (only without an explicit rule)."""

    mode: str = "rule"  # rule | auto | fingerprint | none
    note: str = ""
    fingerprints: Fingerprints | None = None
    auto_ok: bool = True
    probed: dict[str, str] = field(default_factory=dict)  # pod -> outcome text


class Run:
    def __init__(
        self, run_id: str, spec: ProbeSpec, target: ProbeTarget, rule: Rule | None, view: ClusterView
    ):
        self.id = run_id
        self.spec = spec
        self.target = target
        self.rule = rule
        self._view = view
        self.created = time.time()
        self.started = time.monotonic()
        self.finished_at: float | None = None
        self.status = RunStatus.RUNNING
        self.error: str | None = None
        self.results: list[Outcome] = []
        self.samples: dict[str, str] = {}
        self.calibration = Calibration()
        self.first_reply_ms: float | None = None
        self.endpoints_changed = False
        self.known: dict[str, Backend] = {}
        self.task: asyncio.Task[None] | None = None
        self._issued = 0
        self._connections = 0
        self._changed = asyncio.Event()
        self._waiting = 0  # followers waiting on _changed (no new Event per result when there are none)
        self._attributions: dict[Reply, Attribution] = {}
        self._current: tuple[Backend, ...] = ()
        self._current_key: frozenset[tuple[str | None, str, bool]] | None = None
        self._matcher = Matcher(())
        self._candidates: tuple[Candidate, ...] = ()
        self.forbidden: str | None = None  # set when the endpoints turn to a refused address mid-run
        self._read_at = 0.0
        # Where the requests come from (the client kube-proxy sees), when known: a pod name and its IP.
        self.client_pod: str | None = None
        self.client_ip: str | None = None

    # -- endpoints, re-read from the view so scaling mid-run is seen
    def current(self, max_age_s: float = 0.0) -> tuple[Backend, ...]:
        """The endpoints now; with ``max_age_s``, a copy at most that old (the per-request path)."""
        t = time.monotonic()
        if max_age_s and self._current_key is not None and t - self._read_at < max_age_s:
            return self._current
        self._read_at = t
        now = backends(self._view, self.target)
        key = frozenset((b.pod, b.ip, b.ready) for b in now)
        if key != self._current_key:
            if self._current_key is not None:
                self.endpoints_changed = True
            self._current_key = key
            self._current = now
            self._candidates = tuple(Candidate(b.pod, b.ip) for b in now if b.pod is not None)
            self._matcher = Matcher(self._candidates)
            self._attributions.clear()
            for b in now:
                if b.pod is not None:
                    self.known[b.pod] = b
            self.forbidden = forbidden_endpoint(self._view, self.target)
        return self._current

    @property
    def finished(self) -> bool:
        return self.status != RunStatus.RUNNING

    @property
    def elapsed_s(self) -> float:
        end = self.finished_at if self.finished_at is not None else time.monotonic()
        return end - self.started

    def next_seq(self) -> int | None:
        if self._issued >= self.spec.count:
            return None
        self._issued += 1
        return self._issued

    def next_connection(self) -> int:
        self._connections += 1
        return self._connections

    def add(self, outcome: Outcome, sample: str | None = None) -> None:
        self.results.append(outcome)
        if outcome.error is None and self.first_reply_ms is None:
            self.first_reply_ms = outcome.at_ms + (outcome.latency_ms or 0.0)
        if sample is not None and len(self.samples) < MAX_SAMPLES:
            self.samples.setdefault(_sample_key(outcome), sample)
        self._notify()

    def wants_sample(self, outcome: Outcome) -> bool:
        """Whether ``add`` would keep a sample for this outcome (so the hot path builds it only then)."""
        return len(self.samples) < MAX_SAMPLES and _sample_key(outcome) not in self.samples

    def finish(self, status: str, error: str | None = None) -> None:
        if self.finished:
            return
        self.status = status
        self.error = error
        self.finished_at = time.monotonic()
        self._notify()

    def _notify(self) -> None:
        if not self._waiting:  # nobody waits: the next waiter checks the results before waiting
            return
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _wait(self) -> None:
        self._waiting += 1
        try:
            await self._changed.wait()
        finally:
            self._waiting -= 1

    async def follow(self, cursor: int = 0) -> AsyncIterator[list[Outcome]]:
        """Batches of results from ``cursor`` on, until the run is finished and all were delivered."""
        while True:
            if cursor < len(self.results):
                batch = self.results[cursor:]
                cursor += len(batch)
                yield batch
                continue
            if self.finished:
                return
            await self._wait()

    async def wait_changed(self) -> None:
        if not self.finished:
            await self._wait()

    def summary(self) -> Summary:
        shape = RunShape(
            total=self.spec.count,
            session_affinity=self.target.session_affinity,
            affinity_timeout_s=self.target.affinity_timeout_s,
            reuse=self.spec.reuse,
            concurrency=self.spec.concurrency,
            protocol=self.spec.protocol.value,
            endpoints_changed=self.endpoints_changed,
            finished=self.finished,
        )
        return summarize(self.results, shape, self.current(), tuple(self.known.values()))

    def attribute(self, reply: Reply) -> Attribution:
        """Which pod sent ``reply``. A pure function of the reply and the current endpoints, so the answer
        is remembered per distinct reply (a backend's replies repeat) until the endpoints change."""
        self.current(ENDPOINTS_MAX_AGE_S)
        known = self._attributions.get(reply)
        if known is not None:
            return known
        cal = self.calibration
        who = attribute(
            reply,
            self._candidates,
            rule=self.rule,
            fingerprints=cal.fingerprints,
            matcher=self._matcher,
            auto=cal.auto_ok,
        )
        if len(self._attributions) >= ATTRIBUTION_CACHE:  # replies that never repeat: bounded memory
            self._attributions.clear()
        self._attributions[reply] = who
        return who


def _sample_key(outcome: Outcome) -> str:
    return outcome.pod or ("error " + outcome.error if outcome.error else "unattributed")


def sample_of(reply: Reply) -> str:
    text = reply.body[:SAMPLE_CHARS].decode("utf-8", errors="replace")
    head = f"{reply.status} " if reply.status is not None else ""
    more = "…" if len(reply.body) > SAMPLE_CHARS else ""
    return f"{head}{text}{more}"


class ProbeRunner:
    """Starts, bounds, keeps and cancels runs."""

    def __init__(
        self,
        view: ClusterView,
        limits: Limits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        dial: Callable[[str, int], tuple[str, int]] | None = None,
        remote: RemoteProber | None = None,
        origins: Sequence[Origin] = (),
        dashboard_pod: str | None = None,
        dashboard_ip: str | None = None,
    ) -> None:
        """``dial`` maps a checked target address to the socket address to connect to (a test seam);
        ``dashboard_pod``/``dashboard_ip`` name this process's pod (the client of "dashboard" runs)."""
        self.view = view
        self.limits = limits or Limits()
        self._clock = clock
        self._dial = dial or (lambda host, port: (host, port))
        self.remote = remote
        self.origins = (Origin.DASHBOARD, *(o for o in origins if o is not Origin.DASHBOARD and remote))
        self._runs: OrderedDict[str, Run] = OrderedDict()
        self._starts: deque[float] = deque()
        self._dashboard = (dashboard_pod, dashboard_ip)

    def get(self, run_id: str) -> Run | None:
        return self._runs.get(run_id)

    def runs(self) -> list[Run]:
        return list(reversed(self._runs.values()))

    @property
    def active(self) -> int:
        return sum(1 for r in self._runs.values() if not r.finished)

    def start(self, spec: ProbeSpec) -> Run:
        """Validate and start a run; raises SpecError, TargetError or RunLimitError."""
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
        now = self._clock()
        while self._starts and now - self._starts[0] > 60.0:
            self._starts.popleft()
        if len(self._starts) >= self.limits.per_minute:
            raise RunLimitError(f"at most {self.limits.per_minute} probe runs per minute; try again shortly")
        if self.active >= self.limits.max_active:
            raise RunLimitError(f"{self.active} probe runs are active (limit {self.limits.max_active})")
        self._starts.append(now)
        run = Run(secrets.token_hex(6), spec, target, rule, self.view)
        self._set_client(run)
        run.current()
        self._runs[run.id] = run
        self._evict()
        run.task = asyncio.create_task(self._execute(run), name=f"probe-run-{run.id}")
        # A task cancelled before its first step never runs _execute's handlers.
        run.task.add_done_callback(lambda _: run.finish(RunStatus.CANCELLED))
        return run

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
        if spec.method != "GET" or spec.identity:
            raise SpecError(f"origin {spec.origin.value} supports GET without an identity rule only")
        if spec.origin is Origin.EXEC:
            if not spec.exec_pod:
                raise SpecError("origin exec needs exec_pod: a pod of the Service's namespace")
            pod = self.view.pod(ObjectKey(spec.namespace, spec.exec_pod))
            if pod is None or pod.phase != "Running":
                raise SpecError(f"pod {spec.namespace}/{spec.exec_pod} is not a watched running pod")

    def _set_client(self, run: Run) -> None:
        spec = run.spec
        if spec.origin is Origin.DASHBOARD:
            run.client_pod, run.client_ip = self._dashboard
        elif spec.origin is Origin.PROBE_POD:
            run.client_pod = f"svcscope-probe-{run.id}"  # its IP is known only while it runs
        elif spec.exec_pod:
            pod = self.view.pod(ObjectKey(spec.namespace, spec.exec_pod))
            run.client_pod, run.client_ip = spec.exec_pod, pod.pod_ip if pod else None

    def cancel(self, run_id: str) -> bool:
        run = self._runs.get(run_id)
        if run is None or run.finished or run.task is None:
            return False
        run.task.cancel()
        return True

    async def aclose(self) -> None:
        tasks = [r.task for r in self._runs.values() if r.task is not None and not r.task.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _evict(self) -> None:
        while len(self._runs) > self.limits.kept:
            victim = next((k for k, r in self._runs.items() if r.finished), None)
            if victim is None:
                return
            del self._runs[victim]

    async def _execute(self, run: Run) -> None:
        workers: list[asyncio.Task[None]] = []
        try:
            async with asyncio.timeout(self.limits.run_deadline_s):
                if run.spec.origin is not Origin.DASHBOARD:
                    await self._execute_remote(run)
                    run.finish(RunStatus.DONE)
                    return
                if run.rule is None:
                    await self._calibrate(run)
                run.started = time.monotonic()
                workers = [
                    asyncio.create_task(self._worker(run), name=f"probe-{run.id}-{i}")
                    for i in range(run.spec.concurrency)
                ]
                await asyncio.gather(*workers)
            run.finish(RunStatus.DONE)
        except asyncio.CancelledError:
            run.finish(RunStatus.CANCELLED)
        except ForbiddenAddress as exc:
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

    # -- other origins: the echo client runs in a pod; one output line per request
    async def _execute_remote(self, run: Run) -> None:
        assert self.remote is not None
        spec, target = run.spec, run.target
        argv = client_argv(target, spec)
        budget = spec.count * spec.timeout_s + 5
        run.calibration.mode = "auto"
        run.calibration.note = (
            f"the echo client in a pod ({spec.origin.value}) reports the answering pod per request"
        )
        run.started = time.monotonic()
        if spec.origin is Origin.PROBE_POD:
            lines = await self.remote.probe_pod(spec.namespace, argv, budget, name=run.client_pod)
        else:
            assert spec.exec_pod is not None
            lines = await self.remote.exec_in_pod(spec.namespace, spec.exec_pod, argv, budget)
        run.current()
        outcomes = [line.strip() for line in lines if line.strip()][: spec.count]
        for seq, line in enumerate(outcomes, start=1):
            conn = 1 if spec.reuse else seq
            if line.startswith("ERROR"):
                kind = line.removeprefix("ERROR").strip() or "error"
                run.add(Outcome(seq, None, kind, None, conn))
                continue
            pod = run._matcher.pod_for(line)
            reason = None if pod else f"the client reported {line[:60]!r}, which is no current endpoint's pod"
            run.add(Outcome(seq, pod, None, None, conn, reason=reason, method="auto" if pod else None))
        for seq in range(len(outcomes) + 1, spec.count + 1):
            run.add(Outcome(seq, None, "no_output", None, seq, reason="the client printed no line for it"))

    # -- calibration: direct probes to each pod (pod IP:targetPort)
    async def _calibrate(self, run: Run) -> None:
        cal = run.calibration
        pods = [b for b in run.current() if b.directly_probeable and b.ready][:MAX_CALIBRATED_PODS]
        if not pods:
            cal.mode, cal.note = "auto", "no endpoint could be probed directly; automatic attribution only"
            return
        fps = Fingerprints()
        auto_hits = auto_wrong = 0

        async def probe(b: Backend) -> None:
            nonlocal auto_hits, auto_wrong
            assert b.pod is not None
            try:
                ip, port = direct_target(self.view, run.target, b.ip)
            except TargetError as exc:
                cal.probed[b.pod] = f"not probed: {exc.message}"
                return
            for attempt in range(2):
                try:
                    async with asyncio.timeout(run.spec.timeout_s):
                        reply = await self._exchange_once(run, ip, port, attempt)
                except Exception as exc:
                    cal.probed[b.pod] = f"direct probe failed: {wire.classify(exc).kind}"
                    return
                fps.add(b.pod, reply)
                found = Matcher(run._candidates).pods_in(
                    reply.text() + "\n" + "\n".join(v for _, v in reply.headers)
                )
                if found == {b.pod}:
                    auto_hits += 1
                elif found:
                    auto_wrong += 1
            cal.probed[b.pod] = "ok"

        await asyncio.gather(*(probe(b) for b in pods))
        if auto_wrong:
            cal.auto_ok = False
        if auto_hits and not auto_wrong:
            cal.mode, cal.note = "auto", "each pod names itself (pod name or IP) in its reply"
            return
        problem = fps.problem()
        cal.fingerprints = fps
        if problem is None:
            cal.mode = "fingerprint"
            cal.note = (
                f"replies carry no pod name, but each of {len(fps.by_pod)} pods answered directly with a "
                "stable reply distinct from the others: ClusterIP replies are matched by content"
            )
        else:
            cal.mode = "none"
            cal.note = f"cannot attribute: no pod name or IP in the replies and {problem}"
        if auto_wrong:
            cal.note += "; automatic matching disabled (a pod's direct reply named another pod)"

    async def _exchange_once(self, run: Run, ip: str, port: int, seq: int) -> Reply:
        spec = run.spec
        ip, port = self._dial(ip, port)
        if spec.protocol is ProbeProtocol.UDP:
            sock = await wire.open_udp(ip, port, 0)
            try:
                return await sock.exchange(seq)
            finally:
                sock.close()
        conn = await wire.open_connection(ip, port, 0)
        try:
            if spec.protocol is ProbeProtocol.TCP:
                return await wire.tcp_exchange(conn, seq)
            return await wire.http_exchange(
                conn,
                method=spec.method,
                path=spec.path,
                host_header=wire.host_header(run.target.address, run.target.port.port),
                keep_alive=False,
            )
        finally:
            conn.close()

    # -- the ClusterIP requests
    async def _worker(self, run: Run) -> None:
        spec = run.spec
        host_header = wire.host_header(run.target.address, run.target.port.port)
        host, port = self._dial(run.target.address, run.target.port.port)
        conn: wire.Connection | None = None
        udp: wire.UdpSocket | None = None
        try:
            while (seq := run.next_seq()) is not None:
                run.current(ENDPOINTS_MAX_AGE_S)
                if run.forbidden:
                    raise ForbiddenAddress(run.forbidden)
                t0 = time.monotonic()
                at_ms = (t0 - run.started) * 1000.0
                conn_id = 0
                try:
                    async with asyncio.timeout(spec.timeout_s):
                        if spec.protocol is ProbeProtocol.UDP:
                            if udp is None:
                                udp = await wire.open_udp(host, port, run.next_connection())
                            conn_id = udp.ident
                            reply = await udp.exchange(seq)
                        else:
                            if conn is None or not conn.reusable:
                                conn = await wire.open_connection(host, port, run.next_connection())
                            conn_id = conn.ident
                            if spec.protocol is ProbeProtocol.TCP:
                                reply = await wire.tcp_exchange(conn, seq)
                            else:
                                reply = await wire.http_exchange(
                                    conn,
                                    method=spec.method,
                                    path=spec.path,
                                    host_header=host_header,
                                    keep_alive=spec.reuse,
                                )
                except Exception as exc:
                    failure = wire.classify(exc)
                    latency = (time.monotonic() - t0) * 1000.0
                    kind = failure.kind
                    if not any(b.ready for b in run.current()) and kind in (
                        "refused",
                        "timeout",
                        "unreachable",
                    ):
                        kind = "no_endpoints"
                    run.add(
                        Outcome(seq, None, kind, latency, conn_id, reason=failure.detail or None, at_ms=at_ms)
                    )
                    _drop(conn)
                    _drop(udp)
                    conn = udp = None
                    continue
                latency = (time.monotonic() - t0) * 1000.0
                who = run.attribute(reply)
                outcome = Outcome(
                    seq,
                    who.pod,
                    None,
                    latency,
                    conn_id,
                    reason=who.reason,
                    method=who.method.value if who.method else None,
                    status=reply.status,
                    at_ms=at_ms,
                )
                run.add(outcome, sample=sample_of(reply) if run.wants_sample(outcome) else None)
                if not spec.reuse:
                    _drop(conn)
                    _drop(udp)
                    conn = udp = None
        finally:
            _drop(conn)
            _drop(udp)


def _drop(sock: wire.Connection | wire.UdpSocket | None) -> None:
    if sock is not None:
        with contextlib.suppress(Exception):
            sock.close()


def client_argv(target: ProbeTarget, spec: ProbeSpec) -> list[str]:
    """``python3 -m app.echo client`` arguments for the target (the ClusterIP, never another address)."""
    host = f"[{target.address}]" if ":" in target.address else target.address
    hostport = f"{host}:{target.port.port}"
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
        argv += ["--url", f"http://{hostport}{spec.path}"]
        if spec.reuse:
            argv.append("--keepalive")
    elif spec.protocol is ProbeProtocol.TCP:
        argv += ["--tcp", hostport]
    else:
        argv += ["--udp", hostport]
    return argv


def limits_from(settings: Settings) -> Limits:
    return Limits(
        max_count=settings.probe_max_count,
        max_concurrency=settings.probe_max_concurrency,
        max_active=settings.probe_max_runs_active,
        kept=settings.probe_runs_kept,
        per_minute=settings.probe_max_runs_per_minute,
        max_timeout_s=settings.probe_max_timeout_s,
        run_deadline_s=settings.probe_run_deadline_s,
    )
