"""Ping vs TCP vs DNS from an origin: what a user tries first when a Service "does not work", each check
with its result and the one-line reason.

ICMP echo to a ClusterIP gets no answer (kube-proxy translates only the Service's ports and protocols; no
interface owns the address), a TCP connect to ClusterIP:port answers, and the Service's DNS names resolve
to the ClusterIP (a headless Service's to its ready pods' IPs). The checks run in the dashboard's own
process or, through ``app.echo.netcheck``'s source handed to ``python3 -c``, in a probe pod (on the node's
network for the node origin) or an exec'd pod. What comes back from a pod is data: only well-formed lines
for a planned check are read, each once, and every text shown is bounded.

The pure part (``plan``, ``judge``, ``parse``) has no I/O; ``run`` does the sending, bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.domain import PROBE_POD_ORIGINS, Origin
from app.echo import netcheck
from app.probe.remote import RemoteFailed, RemoteProber, refusal
from app.probe.spec import ProbeSpec, RunLimitError, SpecError
from app.writepolicy import Write

CHECK_TIMEOUT_S = 1.0  # each check
REMOTE_BUDGET_S = 20.0  # the pod's whole run: every check's timeout and python's start
MAX_LINES = 16  # of a remote's output: one per check
MAX_DNS_NAMES = 4
MAX_TEXT = 200  # of any text a remote sent back (a detail, an address)
RATE_WINDOW_S = 60.0
SOURCE = Path(netcheck.__file__).read_text(encoding="utf-8")

PING_NO_ANSWER = (
    "no answer, as expected: a ClusterIP is a virtual address that kube-proxy translates only for "
    "the Service's ports and protocols — no interface owns it, so nothing answers ICMP echo"
)
PING_NO_NET_RAW = (
    "not sent: this origin has no NET_RAW capability (no raw socket, so no ping) and its group may not "
    "open ICMP sockets (net.ipv4.ping_group_range); the TCP check below is the test that means something"
)
PING_ANSWER = (
    "an answer, which is unusual for a ClusterIP: something on this node owns the address "
    "(kube-proxy in IPVS mode binds every ClusterIP to a local interface)"
)
# Measured on the devcluster: in nftables mode a root process on the node gets EPERM from sendto (the
# reject is in the output path); in iptables mode the same ping simply gets no answer.
PING_REJECTED = (
    "refused by the node's rules (an ICMP error, or 'operation not permitted' when sent from the node "
    "itself): kube-proxy's nftables mode rejects what is not for one of a ClusterIP's ports — no echo reply"
)


@dataclass(frozen=True, slots=True)
class Plan:
    """What to check for one Service port, and what each check should find."""

    service: str  # namespace/name
    cluster_ip: str | None  # None: headless (no ping, no TCP to a virtual IP)
    port: int | None
    dns: tuple[tuple[str, frozenset[str]], ...]  # name -> expected addresses
    headless: bool
    service_namespace: str
    timeout_s: float = CHECK_TIMEOUT_S

    def argv(self) -> list[str]:
        """``app.echo.netcheck``'s arguments for this plan (the names and addresses are checked values)."""
        args = ["--timeout", f"{self.timeout_s:g}"]
        if self.cluster_ip is not None:
            args += ["--ping", self.cluster_ip]
            if self.port is not None:
                args += ["--tcp", f"{self.cluster_ip}:{self.port}"]
        for name, _ in self.dns:
            args += ["--dns", name]
        return args


def plan(
    *,
    namespace: str,
    name: str,
    cluster_ip: str | None,
    port: int | None,
    dns_names: Sequence[str],
    pod_ips: Iterable[str],
    timeout_s: float = CHECK_TIMEOUT_S,
) -> Plan:
    """The checks for a Service: its ClusterIP (None when headless), one port, its DNS names (from
    ``app.catalog.reach``) expected to give the ClusterIP, or the ready pods' IPs when headless."""
    if cluster_ip is not None:
        ipaddress.ip_address(cluster_ip)  # a ValueError here is a bug upstream, never a shell word
    expected = frozenset({cluster_ip} if cluster_ip else set(pod_ips))
    names = tuple((n, expected) for n in dns_names[:MAX_DNS_NAMES])
    return Plan(f"{namespace}/{name}", cluster_ip, port, names, cluster_ip is None, namespace, timeout_s)


@dataclass(frozen=True, slots=True)
class Check:
    """One check's outcome: ``ok`` says whether it found what a working Service gives (None: not judged)."""

    kind: str  # ping, tcp, dns
    target: str
    result: str
    ok: bool | None
    reason: str
    addresses: tuple[str, ...] = ()
    ms: float | None = None


@dataclass(frozen=True, slots=True)
class Report:
    origin: str
    where: str  # in words: "the dashboard's pod", "probe pod svcscope/…", …
    checks: tuple[Check, ...]
    error: str | None = None


# What app.echo.netcheck reports; anything else a pod prints is shown as "invalid".
RESULTS = frozenset(
    {"answer", "no_answer", "rejected", "no_net_raw"}
    | {"connected", "refused", "timeout", "resolved", "not_found", "error"}
)


def _is_ip(value: object) -> bool:
    try:
        ipaddress.ip_address(str(value)[:64])
    except ValueError:
        return False
    return True


def _text(value: object) -> str:
    return str(value)[:MAX_TEXT]


def judge(kind: str, target: str, raw: dict[str, object], plan_: Plan, origin_namespace: str | None) -> Check:
    """A raw result (``app.echo.netcheck``'s fields) with its verdict and reason."""
    result = str(raw.get("result", "error"))
    result = result if result in RESULTS else "invalid"
    ms = raw.get("ms")
    ms_value = float(ms) if isinstance(ms, int | float) and not isinstance(ms, bool) else None
    detail = _text(raw.get("detail", "")) if raw.get("detail") else ""
    if kind == "ping":
        reasons = {
            "no_answer": (True, PING_NO_ANSWER),
            "no_net_raw": (None, PING_NO_NET_RAW),
            "answer": (False, PING_ANSWER),
            "rejected": (True, f"{PING_REJECTED}{f' ({detail})' if detail else ''}"),
        }
        ok, reason = reasons.get(result, (None, f"could not ping: {detail or result}"))
        return Check(kind, target, result, ok, reason, ms=ms_value)
    if kind == "tcp":
        if result == "connected":
            reason = "connected: kube-proxy translated ClusterIP:port to one of the Service's ready endpoints"
            return Check(kind, target, result, True, reason, ms=ms_value)
        reasons_tcp = {
            "refused": "refused: no ready endpoint (kube-proxy rejects), or the pod does not listen on "
            "targetPort",
            "timeout": f"no answer within {plan_.timeout_s:g} s: dropped (e.g. internalTrafficPolicy Local "
            "with no endpoint on this node), a NetworkPolicy, or the pod does not answer",
        }
        return Check(kind, target, result, False, reasons_tcp.get(result, f"failed: {detail or result}"))
    return _judge_dns(target, result, raw, detail, ms_value, plan_, origin_namespace)


def _judge_dns(
    name: str,
    result: str,
    raw: dict[str, object],
    detail: str,
    ms: float | None,
    plan_: Plan,
    origin_namespace: str | None,
) -> Check:
    expected = dict(plan_.dns).get(name, frozenset())
    what = "its ready pods' IPs (a headless Service has no virtual IP)" if plan_.headless else "the ClusterIP"
    short = "." not in name
    if result != "resolved":
        reason = f"no address ({detail or result})"
        if short and origin_namespace is None:
            reason = (
                f"not found: a bare name resolves only through the search path of a pod in the Service's own "
                f"namespace ({plan_.service_namespace}), and this origin's namespace is not known"
            )
            return Check("dns", name, result, None, reason, ms=ms)
        if short and origin_namespace != plan_.service_namespace:
            reason = (
                "not found, as expected from here: a bare name resolves through the search path of a pod "
                f"in the Service's own namespace ({plan_.service_namespace}); this origin's is "
                f"{origin_namespace}"
            )
            return Check("dns", name, result, True, reason, ms=ms)
        return Check("dns", name, result, False, reason, ms=ms)
    got = raw.get("addresses")
    addresses = tuple(a for a in got[:64] if _is_ip(a)) if isinstance(got, list) else ()
    if set(addresses) == set(expected) and expected:
        return Check("dns", name, result, True, f"→ {what}, as expected", addresses, ms)
    want = ", ".join(sorted(expected)) or "nothing"
    reason = (
        f"→ other addresses than {what} ({want}): another name matched first in the search path, or stale"
    )
    return Check("dns", name, result, False, reason, addresses, ms)


def parse(lines: Iterable[str], plan_: Plan, origin_namespace: str | None) -> list[Check]:
    """The checks a remote printed, in plan order; a planned check without a line says so."""
    wanted = _planned(plan_)
    found: dict[tuple[str, str], Check] = {}
    for line in lines:
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        key = (data.get("check"), data.get("target"))
        if key in wanted and key not in found:
            kind, target = wanted[wanted.index(key)]
            found[key] = judge(kind, target, data, plan_, origin_namespace)
    missing = "no result came back for this check"
    return [found.get(k) or Check(k[0], k[1], "missing", None, missing) for k in wanted]


def _planned(plan_: Plan) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if plan_.cluster_ip is not None:
        out.append(("ping", plan_.cluster_ip))
        if plan_.port is not None:
            out.append(("tcp", f"{plan_.cluster_ip}:{plan_.port}"))
    out += [("dns", name) for name, _ in plan_.dns]
    return out


class Limiter:
    """At most ``per_minute`` check runs in any minute (``clock``: a test seam)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._starts: deque[float] = deque()

    def admit(self, per_minute: int) -> None:
        now = self._clock()
        while self._starts and now - self._starts[0] > RATE_WINDOW_S:
            self._starts.popleft()
        if len(self._starts) >= per_minute:
            raise RunLimitError(f"at most {per_minute} check runs per minute; try again shortly")
        self._starts.append(now)


async def run_local(plan_: Plan, origin_namespace: str | None) -> list[Check]:
    """The checks from the dashboard's own process, each in a thread with its own timeout."""

    async def one(kind: str, target: str) -> dict[str, object]:
        if kind == "ping":
            return await asyncio.to_thread(netcheck.ping, target, plan_.timeout_s)
        if kind == "tcp":
            host, _, port = target.rpartition(":")
            return await asyncio.to_thread(netcheck.tcp, host, int(port), plan_.timeout_s)
        return await asyncio.to_thread(netcheck.dns, target, plan_.timeout_s)

    planned = _planned(plan_)
    raws = await asyncio.gather(*(one(k, t) for k, t in planned))
    return [judge(k, t, raw, plan_, origin_namespace) for (k, t), raw in zip(planned, raws, strict=True)]


def remote_argv(plan_: Plan) -> list[str]:
    return ["python3", "-c", SOURCE, *plan_.argv()]


async def run_remote(
    plan_: Plan,
    remote: RemoteProber,
    origin: Origin,
    *,
    origin_namespace: str | None,
    node: str | None = None,
    exec_namespace: str | None = None,
    exec_pod: str | None = None,
    exec_container: str | None = None,
) -> list[Check]:
    """The checks from a probe pod (on the node's network for origin node) or inside an exec'd pod."""
    argv = remote_argv(plan_)
    lines: AsyncGenerator[str, None]
    if origin in PROBE_POD_ORIGINS:
        lines = remote.probe_pod(argv, REMOTE_BUDGET_S, node=node, host_network=origin is Origin.NODE)
    else:
        assert exec_namespace is not None and exec_pod is not None
        lines = remote.exec_in_pod(exec_namespace, exec_pod, argv, REMOTE_BUDGET_S, container=exec_container)
    seen: list[str] = []
    try:
        async with asyncio.timeout(REMOTE_BUDGET_S + 40), contextlib.aclosing(lines):
            async for line in lines:
                seen.append(line)
                if len(seen) >= MAX_LINES:
                    break
    except TimeoutError as exc:
        raise RemoteFailed(f"the checks did not finish within {REMOTE_BUDGET_S + 40:.0f} s") from exc
    except Exception as exc:
        message = getattr(exc, "message", None)
        if getattr(exc, "command_not_found", False):
            raise RemoteFailed(
                f"{exec_namespace}/{exec_pod}: the checks need python3 in the container, and it has none"
            ) from exc
        if isinstance(message, str):
            raise RemoteFailed(message) from exc
        raise
    return parse(seen, plan_, origin_namespace)


def origin_refusal(
    remote: RemoteProber | None, origin: Origin, exec_namespace: str, exec_pod: str
) -> str | None:
    """Why the checks may not run from ``origin`` (the same write policy as probe runs), or None."""
    if origin is Origin.DASHBOARD:
        return None
    if remote is None:
        return f"origin {origin.value} is not enabled"
    if origin is Origin.EXEC:
        if not exec_pod:
            raise SpecError("origin exec needs exec_pod: a running pod (exec_namespace: its namespace)")
        return remote.refusal(Write.POD_EXEC, exec_namespace, exec_pod)
    return refusal(remote, ProbeSpec("", "", "", origin=origin))
