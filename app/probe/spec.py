"""What a probe run is asked to do (``ProbeSpec``), the bounds it must respect (``Limits``), and the
errors that refuse it. Pure: the values come from ``Settings`` through the lifespan."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal, get_args

from app.domain import DNS_LABEL, DNS_SUBDOMAIN, LABEL_MAX, PROBE_POD_ORIGINS, SUBDOMAIN_MAX, Origin
from app.probe import wire
from app.probe.attribution import Rule, RuleError, parse_rule
from app.probe.pacing import Pacing, PacingError, checked
from app.probe.targets import ProbeProtocol

Method = Literal["GET", "HEAD"]
METHODS: tuple[str, ...] = get_args(Method)
MIN_TIMEOUT_S = 0.05
# A probe pod or an exec'd client sends one request at a time (the runner refuses more).
REMOTE_MAX_CONCURRENCY = 1


class SpecError(ValueError):
    """Invalid probe parameters."""


class RunLimitError(Exception):
    """Too many active runs, or too many runs per minute."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The runner's bounds. No defaults here: ``Settings`` holds them (``app.lifespan.limits_from``)."""

    max_count: int
    max_concurrency: int
    max_in_flight: int  # across all dashboard-origin runs of the process
    max_active: int
    kept: int
    per_minute: int
    max_timeout_s: float
    run_deadline_s: float


def checked_request(method: str, path: str) -> tuple[str, str]:
    """The HTTP method (upper case) and path a probe may send, or a SpecError saying why not."""
    method = method.upper()
    if method not in METHODS:
        raise SpecError(f"method must be one of {', '.join(METHODS)}")
    try:
        return method, wire.validate_path(path)
    except ValueError as exc:
        raise SpecError(str(exc)) from exc


def identity_rule(identity: str | None, annotation: str | None) -> Rule | None:
    """The identity rule a probe uses: the one asked for, else the Service's annotation, else none."""
    text = identity or annotation
    if not text:
        return None
    try:
        return parse_rule(text)
    except RuleError as exc:
        origin = "identity" if identity else "annotation svcscope.io/pod-identity"
        raise SpecError(f"{origin}: {exc}") from exc


def max_concurrency(origin: Origin, limits: Limits) -> int:
    """The most requests in flight a run from ``origin`` may ask for: what the probe form offers."""
    return (
        limits.max_concurrency
        if origin is Origin.DASHBOARD
        else min(REMOTE_MAX_CONCURRENCY, limits.max_concurrency)
    )


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
    exec_pod: str | None = None  # origin exec: the pod to run the client in
    exec_namespace: str | None = None  # origin exec: the pod's namespace (None: the Service's)
    exec_container: str | None = None  # origin exec: the container (None: the pod's first)
    # Origins probe-pod and node: the node to run the probe pod on (None: the scheduler's pick).
    node: str | None = None
    # Pacing (app.probe.pacing): a wait between requests and a pause after every N-th one, to show affinity
    # over time. 0: not paced.
    interval_s: float = 0.0
    pause_after: int = 0
    pause_s: float = 0.0

    @property
    def pacing(self) -> Pacing:
        return Pacing(self.interval_s, self.pause_after, self.pause_s)

    @property
    def exec_in(self) -> str:
        """The namespace of the exec pod."""
        return self.exec_namespace or self.namespace

    def validated(self, limits: Limits) -> ProbeSpec:
        if not 1 <= self.count <= limits.max_count:
            raise SpecError(f"count must be between 1 and {limits.max_count}")
        if not 1 <= self.concurrency <= limits.max_concurrency:
            raise SpecError(f"concurrency must be between 1 and {limits.max_concurrency}")
        if not MIN_TIMEOUT_S <= self.timeout_s <= limits.max_timeout_s:
            raise SpecError(f"timeout_s must be between {MIN_TIMEOUT_S} and {limits.max_timeout_s}")
        method, path = checked_request(self.method, self.path)
        exec_pod = _name("exec_pod", self.exec_pod, DNS_SUBDOMAIN, SUBDOMAIN_MAX)
        exec_namespace = _name("exec_namespace", self.exec_namespace, DNS_LABEL, LABEL_MAX)
        exec_container = _name("exec_container", self.exec_container, DNS_LABEL, LABEL_MAX)
        node = _name("node", self.node, DNS_SUBDOMAIN, SUBDOMAIN_MAX)
        if node and self.origin not in PROBE_POD_ORIGINS:
            raise SpecError("node applies to origins probe-pod and node only")
        if (exec_pod or exec_namespace or exec_container) and self.origin is not Origin.EXEC:
            raise SpecError("exec_pod, exec_namespace and exec_container apply to origin exec only")
        try:
            checked(
                self.pacing,
                count=self.count,
                concurrency=self.concurrency,
                reuse=self.reuse,
                dashboard=self.origin is Origin.DASHBOARD,
                timeout_s=self.timeout_s,
                deadline_s=limits.run_deadline_s,
            )
        except PacingError as exc:
            raise SpecError(str(exc)) from exc
        return replace(
            self,
            exec_pod=exec_pod,
            exec_namespace=exec_namespace,
            exec_container=exec_container,
            node=node,
            port=str(self.port).strip(),
            concurrency=min(self.concurrency, self.count),
            method=method,
            path=path,
            identity=(self.identity or "").strip() or None,
        )


def _name(field: str, value: str | None, pattern: str, most: int) -> str | None:
    """An optional Kubernetes name from a form or the API: stripped, None when empty, else checked."""
    value = (value or "").strip()
    if not value:
        return None
    if len(value) > most or not re.fullmatch(pattern, value):
        raise SpecError(f"{field} {value[:80]!r} is not a valid name (lower-case letters, digits, '-')")
    return value
