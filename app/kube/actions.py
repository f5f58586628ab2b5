"""Kubernetes *actions*: the only writes svcscope ever makes, each only when enabled and allowed by RBAC.

* Probes from other origins: a short-lived probe pod (``SVCSCOPE_PROBE_ORIGINS``; pods create/delete/get
  and pods/log get in the release's own namespace only), or exec in a pod (pods/exec get+create). Both run
  ``python3 -m app.echo client --format json …`` (the svcscope image carries it) and yield its output
  lines as they come, one JSON record per request (``app.echo.record``).
* Session affinity of a watched Service (``SVCSCOPE_ALLOW_AFFINITY_PATCH``; patch on services): a merge
  patch of ``spec.sessionAffinity`` and ``spec.sessionAffinityConfig``, and an Event on the Service that
  records the change. The page learns the result from the watch like any other change.

Where a write may go is decided by ``app.writepolicy`` before anything is sent; this module checks it
again, so that no caller can skip it. Error messages name the object and the missing permission, never
the apiserver's URL.

Long on purpose: every write (probe pods, exec, the affinity patch) shares one deadline, one refusal
policy and one translation of API errors into plain words; split per write, those rules would be copied.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import json
import logging
import math
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.stream import WsApiClient

from app.config import Settings
from app.kube.client import ApiTimeout, bounded, create_api_client
from app.kube.waiting import report_waiting
from app.writepolicy import Write, WritePolicy

log = logging.getLogger(__name__)

MANAGED_BY = "svcscope"
PROBE_LABELS = {"app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/component": "probe"}
HOST_NETWORK_LABEL = {"svcscope.io/host-network": "true"}
PROBE_SELECTOR = ",".join(f"{k}={v}" for k, v in PROBE_LABELS.items())
PROBE_POD_START_SLACK_S = 30  # scheduling and starting the container count toward activeDeadlineSeconds
PHASE_POLL_S = 0.25  # how often a starting probe pod's phase is read (one short-lived pod: no watch)
LOG_REOPENS = 3  # a log stream that drops while the pod still runs is followed again (duplicates ignored)
# Longer output lines are dropped: a record is far shorter (app.echo.record), and so is a tool loop's line
# (app.probe.toolclient: a capped reply as hex).
MAX_OUTPUT_LINE = 8192
EVENT_REASON = "SessionAffinityChanged"
STDERR_KEPT = 2048  # of an exec'd client's stderr: enough for the error that made it print nothing
# How the container runtime says that an exec'd command does not exist (runc, crun; containerd's wrapping).
NOT_FOUND_MARKS = (b"executable file not found", b"no such file or directory", b"not found in $PATH")
# A probe pod pinned to a node that no kubelet runs gets no status at all: fail after this, not later. A
# running kubelet writes a new pod's first conditions before it creates the sandbox, within a second or two
# even on a loaded node. When Nodes are watched the name is checked at submit; this is for when they are not.
NODE_SILENT_S = 10.0
# A container waiting for one of these will not start by itself: fail the run now, not at its deadline.
STUCK_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",
    }
)


AFFINITIES = ("None", "ClientIP")
MAX_AFFINITY_TIMEOUT_S = 86_400  # the API's upper bound for sessionAffinityConfig.clientIP.timeoutSeconds
DEFAULT_AFFINITY_TIMEOUT_S = 10_800  # what the API defaults to for ClientIP
PATCH_TIMEOUT_S = 10.0


class Refusal(enum.StrEnum):
    """Why an action failed, as far as the apiserver said (``app.web.errors`` maps it to HTTP)."""

    FORBIDDEN = "forbidden"  # RBAC
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    INVALID = "invalid"  # the apiserver rejected the values
    FAILED = "failed"  # no usable answer: timeouts, connection errors, other statuses


API_REFUSALS = {403: Refusal.FORBIDDEN, 404: Refusal.NOT_FOUND, 409: Refusal.CONFLICT, 422: Refusal.INVALID}


class ActionError(Exception):
    def __init__(self, message: str, refusal: Refusal = Refusal.FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.refusal = refusal
        self.command_not_found = False  # exec: the container has no such command (e.g. no shell)


@dataclass(frozen=True, slots=True)
class AffinityChange:
    """A Service's new session affinity; invalid values raise ValueError (pure, no API access)."""

    affinity: str
    timeout_s: int | None = None  # ClientIP only; None keeps the API default (10800 s)

    def __post_init__(self) -> None:
        if self.affinity not in AFFINITIES:
            raise ValueError(f"session affinity must be one of {', '.join(AFFINITIES)}")
        if self.timeout_s is not None:
            if self.affinity != "ClientIP":
                raise ValueError("a timeout applies only to ClientIP affinity")
            if not 1 <= self.timeout_s <= MAX_AFFINITY_TIMEOUT_S:
                raise ValueError(f"timeout must be between 1 and {MAX_AFFINITY_TIMEOUT_S} seconds")

    @classmethod
    def parse(cls, affinity: str, timeout: str | int | None) -> AffinityChange:
        """From form values: the timeout is ignored for None and must be a whole number for ClientIP."""
        if affinity != "ClientIP" or timeout is None or (isinstance(timeout, str) and not timeout.strip()):
            return cls(affinity)
        try:
            seconds = int(timeout)
        except ValueError:
            raise ValueError("timeout must be a whole number of seconds") from None
        return cls(affinity, seconds)

    def patch(self) -> dict[str, Any]:
        """A JSON merge patch: ``null`` removes the config, which the API forbids with affinity None."""
        config: dict[str, Any] | None = None
        if self.affinity == "ClientIP":
            config = {"clientIP": {"timeoutSeconds": self.timeout_s or DEFAULT_AFFINITY_TIMEOUT_S}}
        return {"spec": {"sessionAffinity": self.affinity, "sessionAffinityConfig": config}}


def _ws_or_client_error(exc: BaseException, what: str, *, forbidden_hint: str) -> ActionError:
    """A plain message for a failed websocket/HTTP call: the status in words, never the apiserver's URL."""
    status = getattr(exc, "status", None)
    if isinstance(exc, ApiException):
        return ActionError(_api_message(exc, what, forbidden_hint=forbidden_hint), _refusal(exc.status))
    if isinstance(exc, aiohttp.WSServerHandshakeError | aiohttp.ClientResponseError) and status:
        if status == 403:
            return ActionError(f"the dashboard's ServiceAccount may not {forbidden_hint}", Refusal.FORBIDDEN)
        if status == 404:
            return ActionError(f"{what} was not found", Refusal.NOT_FOUND)
        return ActionError(f"{what}: the apiserver answered {status}", _refusal(status))
    if isinstance(exc, TimeoutError):
        return ActionError(f"{what}: the apiserver did not answer in time")
    return ActionError(f"{what}: the apiserver could not be reached ({type(exc).__name__})")


def _refusal(status: object) -> Refusal:
    try:
        return API_REFUSALS.get(int(status or 0), Refusal.FAILED)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return Refusal.FAILED


async def create_actions(settings: Settings) -> KubeActions | None:
    """KubeActions when a write is enabled (another probe origin or the affinity patch), else None."""
    if not settings.probe_origins and not settings.allow_affinity_patch:
        return None
    api = await create_api_client(
        kubeconfig=settings.kubeconfig, in_cluster=settings.kubernetes_service_host is not None
    )
    return KubeActions(api, ProbePodConfig.from_settings(settings), policy=policy_from(settings))


def policy_from(settings: Settings) -> WritePolicy:
    return WritePolicy.of(settings.writable_namespaces, settings.probe_pod_namespace)


@dataclass(frozen=True, slots=True)
class ProbePodConfig:
    """How probe pods are made: image, namespace, owner (the dashboard's pod), resources, the deadline cap."""

    image: str
    namespace: str | None = None
    owner_name: str | None = None
    owner_uid: str | None = None
    max_deadline_s: float = 900.0  # the run deadline: no probe pod may outlive a run
    cpu_request: str = "100m"
    cpu_limit: str = "500m"
    memory_request: str = "32Mi"
    memory_limit: str = "64Mi"

    @classmethod
    def from_settings(cls, settings: Settings) -> ProbePodConfig:
        return cls(
            image=settings.probe_pod_image,
            namespace=settings.probe_pod_namespace,
            owner_name=settings.pod_name,
            owner_uid=settings.pod_uid,
            max_deadline_s=settings.probe_run_deadline_s,
            cpu_request=settings.probe_pod_cpu_request,
            cpu_limit=settings.probe_pod_cpu_limit,
            memory_request=settings.probe_pod_memory_request,
            memory_limit=settings.probe_pod_memory_limit,
        )

    def deadline_s(self, budget_s: float) -> int:
        """activeDeadlineSeconds: the client's own budget, never more than a run may last, plus start-up."""
        return math.ceil(min(budget_s, self.max_deadline_s)) + PROBE_POD_START_SLACK_S

    def manifest(
        self,
        name: str,
        argv: Sequence[str],
        budget_s: float,
        node: str | None = None,
        *,
        host_network: bool = False,
    ) -> dict[str, Any]:
        """The probe pod: owned by the dashboard's pod (gone when that pod goes), bounded in time and size;
        on ``node`` if given (spec.nodeName: the kubelet of that node runs it, no scheduler involved);
        with ``host_network`` in the node's own network namespace (the node origin), still unprivileged."""
        metadata: dict[str, Any] = {"name": name, "labels": dict(PROBE_LABELS)}
        if self.owner_name and self.owner_uid:
            metadata["ownerReferences"] = [
                {"apiVersion": "v1", "kind": "Pod", "name": self.owner_name, "uid": self.owner_uid}
            ]
        pinned: dict[str, Any] = {"nodeName": node} if node else {}
        if host_network:
            # Cluster DNS still answers (a node's own resolver would not know Service names); the labels
            # let anyone listing the namespace see which probe pods share a node's network.
            pinned |= {"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"}
            metadata["labels"] |= HOST_NETWORK_LABEL
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": {
                **pinned,
                "restartPolicy": "Never",
                "activeDeadlineSeconds": self.deadline_s(budget_s),
                "terminationGracePeriodSeconds": 0,
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 10001,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": "probe",
                        "image": self.image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": list(argv),
                        "resources": {
                            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
                            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
            },
        }


@dataclass(frozen=True, slots=True)
class RecordedChange:
    """An affinity change as recorded on the Service (an Event) and shown on its page."""

    at: datetime.datetime
    old: str
    new: str
    client: str


class _Lines:
    """Splits a byte stream into lines, dropping any line longer than MAX_OUTPUT_LINE (bounded memory)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> list[str]:
        out: list[str] = []
        self._buf += data
        while (nl := self._buf.find(b"\n")) >= 0:
            line = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            if not self._skipping and len(line) <= MAX_OUTPUT_LINE:
                out.append(line.decode("utf-8", "replace"))
            self._skipping = False
        if len(self._buf) > MAX_OUTPUT_LINE:
            self._buf.clear()
            self._skipping = True
        return out

    def rest(self) -> list[str]:
        line, self._buf = bytes(self._buf), bytearray()
        return [] if self._skipping or not line else [line.decode("utf-8", "replace")]


class KubeActions:
    """Satisfies ``app.state.Actions`` (``app.probe.remote.RemoteProber`` and the affinity patch)."""

    def __init__(self, api: k8s.ApiClient, pods: ProbePodConfig, *, policy: WritePolicy) -> None:
        self.api = api
        self.pods = pods
        self.policy = policy

    async def close(self) -> None:
        await self.api.close()

    def _allow(self, namespace: str, write: Write, name: str) -> None:
        decision = self.policy.check(namespace, write, name)
        if not decision:
            raise ActionError(decision.reason, Refusal.FORBIDDEN)

    def refusal(self, write: Write, namespace: str, name: str) -> str | None:
        """Why ``write`` to ``namespace/name`` would be refused, or None (``RemoteProber.refusal``)."""
        if write is Write.PROBE_POD:
            namespace = self.pods.namespace or ""
        decision = self.policy.check(namespace, write, name)
        return None if decision else decision.reason

    async def patch_session_affinity(self, namespace: str, name: str, change: AffinityChange) -> None:
        """Merge-patch a Service's session affinity; ActionError carries the API's status and message."""
        self._allow(namespace, Write.SERVICE_PATCH, name)
        core = k8s.CoreV1Api(self.api)
        what = f"Service {namespace}/{name}"
        try:
            async with asyncio.timeout(PATCH_TIMEOUT_S):
                await core.patch_namespaced_service(  # type: ignore[call-arg]  # the client takes it at runtime
                    name, namespace, change.patch(), _content_type="application/merge-patch+json"
                )
        except ApiException as exc:
            raise ActionError(
                _api_message(
                    exc,
                    what,
                    forbidden_hint=f"patch {what} (install the chart with "
                    f"rbac.patchServices=true and {namespace} in rbac.writableNamespaces)",
                ),
                _refusal(exc.status),
            ) from exc
        except TimeoutError as exc:
            raise ActionError(f"the apiserver did not answer within {PATCH_TIMEOUT_S:.0f} s") from exc
        except Exception as exc:  # connection errors and the like: a failed action, never a crash
            raise ActionError(f"patching {what} failed: {type(exc).__name__}") from exc

    async def record_affinity_change(
        self, namespace: str, name: str, uid: str | None, change: RecordedChange
    ) -> None:
        """An Event on the Service that says who changed its affinity from what to what (best effort:
        a refused Event is logged, the patch itself has already happened)."""
        self._allow(namespace, Write.SERVICE_PATCH, name)
        core = k8s.CoreV1Api(self.api)
        now = change.at.astimezone(datetime.UTC)
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{name}.svcscope-", "namespace": namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Service",
                "namespace": namespace,
                "name": name,
                **({"uid": uid} if uid else {}),
            },
            "reason": EVENT_REASON,
            "message": f"sessionAffinity {change.old} -> {change.new} from svcscope (client {change.client})",
            "type": "Normal",
            "source": {"component": MANAGED_BY},
            "reportingComponent": MANAGED_BY,
            "reportingInstance": self.pods.owner_name or MANAGED_BY,
            "action": "Patch",
            "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": 1,
        }
        try:
            async with asyncio.timeout(PATCH_TIMEOUT_S):
                await core.create_namespaced_event(namespace, event)  # type: ignore[arg-type]  # a dict body
        except Exception as exc:  # the change is still shown on the page; say why the Event is missing
            err = _ws_or_client_error(
                exc, f"Event on Service {namespace}/{name}", forbidden_hint=f"create events in {namespace}"
            )
            raise ActionError(err.message, err.refusal) from exc

    async def probe_pod(
        self,
        argv: Sequence[str],
        budget_s: float,
        *,
        name: str | None = None,
        node: str | None = None,
        host_network: bool = False,
        started: Callable[[str | None, str | None], None] | None = None,
    ) -> AsyncGenerator[str, None]:
        """Run ``argv`` in a fresh pod of the svcscope image in the probe namespace (on the node's network
        with ``host_network``); tell ``started`` its IP and node once it runs; yield its output lines as
        they are written; delete the pod when done, failed or closed early."""
        namespace = self.pods.namespace or ""
        name = name or f"svcscope-probe-{secrets.token_hex(4)}"
        self._allow(namespace, Write.PROBE_POD, name)
        core = k8s.CoreV1Api(self.api)
        what = f"probe pod {namespace}/{name}"
        hint = f"create pods in {namespace} (install the chart with rbac.probePods=true)"
        try:
            manifest = self.pods.manifest(name, argv, budget_s, node, host_network=host_network)
            await bounded(
                core.create_namespaced_pod(namespace, manifest),  # type: ignore[arg-type]  # a dict body
                f"creating {what}",
            )
        except Exception as exc:
            raise _ws_or_client_error(exc, what, forbidden_hint=hint) from exc
        try:
            deadline = time.monotonic() + self.pods.deadline_s(budget_s) + 10
            phase, ip, on_node = await self._started(core, namespace, name, deadline, node=node)
            if started is not None:
                started(ip, on_node)
            got_any = False
            for _ in range(LOG_REOPENS + 1):
                async for line in self._follow_log(core, namespace, name, deadline):
                    got_any = True
                    yield line
                current = await bounded(core.read_namespaced_pod(name, namespace), f"reading {what}")
                phase = current.status.phase or ""
                if phase in ("Succeeded", "Failed") or time.monotonic() > deadline:
                    break
            if phase == "Failed" and not got_any:
                raise ActionError(f"{what} failed without output")
        except ActionError:
            raise
        except Exception as exc:
            raise _ws_or_client_error(
                exc, what, forbidden_hint=f"read pods and pods/log in {namespace}"
            ) from exc
        finally:
            await self._delete_pod(core, namespace, name)

    async def _started(
        self, core: k8s.CoreV1Api, namespace: str, name: str, deadline: float, *, node: str | None = None
    ) -> tuple[str, str | None, str | None]:
        """The pod's phase once it runs or ended, with its IP and node."""
        phase = ""
        ip: str | None = None
        on_node: str | None = None
        silent_until = time.monotonic() + NODE_SILENT_S
        while phase not in ("Running", "Succeeded", "Failed"):
            if time.monotonic() > deadline:
                raise ActionError(f"probe pod {namespace}/{name} did not start (phase {phase or 'unknown'})")
            await asyncio.sleep(PHASE_POLL_S)  # the phase of one short-lived pod: polled, not watched
            try:
                current = await bounded(
                    core.read_namespaced_pod(name, namespace), f"reading {namespace}/{name}"
                )
            except (ApiTimeout, OSError):  # the pod starts on meanwhile: ask again until the deadline
                continue
            phase = current.status.phase or ""
            ip = current.status.pod_ip or ip
            on_node = current.spec.node_name if current.spec is not None else on_node
            # The apiserver accepts any nodeName (and svcscope may not list nodes): a name no kubelet
            # answers to shows as a pod without any condition.
            if node and not current.status.conditions:
                if time.monotonic() > silent_until:
                    raise ActionError(
                        f"node {node!r} did not pick up probe pod {namespace}/{name} within "
                        f"{NODE_SILENT_S:g} s: no running node has that name, or its kubelet is down. "
                        "Check the name with `kubectl get nodes`, or leave the node empty to let the "
                        "scheduler choose.",
                        Refusal.NOT_FOUND,
                    )
                # Said on the run while it waits: the silence is the only sign of a wrong name.
                report_waiting(f"waiting for node {node!r} to pick up the probe pod")
            for status in current.status.container_statuses or ():
                waiting = status.state.waiting if status.state else None
                if waiting is not None and waiting.reason in STUCK_REASONS:
                    reason = f"{waiting.reason} (image {self.pods.image})"
                    raise ActionError(f"probe pod {namespace}/{name} cannot start: {reason}")
        return phase, ip, on_node

    async def _follow_log(
        self, core: k8s.CoreV1Api, namespace: str, name: str, deadline: float
    ) -> AsyncIterator[str]:
        # Without preloading, the call returns the open aiohttp response (typed as str).
        resp: Any = await core.read_namespaced_pod_log(
            name,
            namespace,
            container="probe",
            follow=True,
            _preload_content=False,
            _request_timeout=max(deadline - time.monotonic(), 1.0),
        )
        lines = _Lines()
        try:
            if resp.status >= 300:  # unread content: the call does not check the status itself
                raise ActionError(
                    f"the log of probe pod {namespace}/{name} could not be read (status {resp.status})",
                    _refusal(resp.status),
                )
            async for chunk in resp.content.iter_any():
                for line in lines.feed(chunk):
                    yield line
            for line in lines.rest():
                yield line
        finally:
            resp.release()

    async def _delete_pod(self, core: k8s.CoreV1Api, namespace: str, name: str) -> None:
        try:
            # Shielded: a cancelled run still deletes its pod.
            await asyncio.shield(
                bounded(
                    core.delete_namespaced_pod(name, namespace, grace_period_seconds=0), f"deleting {name}"
                )
            )
        except Exception as exc:  # its owner and activeDeadlineSeconds still end it; say it was left behind
            log.warning("probe pod %s/%s not deleted: %s", namespace, name, type(exc).__name__)

    async def reap_probe_pods(self, live: frozenset[str] = frozenset()) -> list[str]:
        """Delete probe pods in the probe namespace left by an earlier dashboard process: those owned by this
        pod (a restarted container) or by a pod that is gone, and those with no owner. Probe pods of
        another live dashboard (another release in the namespace) and ``live`` names are kept."""
        namespace = self.pods.namespace
        if not namespace or not self.policy.check(namespace, Write.PROBE_POD, "-"):
            return []
        core = k8s.CoreV1Api(self.api)
        found = await core.list_namespaced_pod(namespace, label_selector=PROBE_SELECTOR)
        reaped: list[str] = []
        for pod in found.items:
            name = pod.metadata.name
            if name in live or await self._owner_alive(core, namespace, pod.metadata.owner_references or []):
                continue
            await self._delete_pod(core, namespace, name)
            reaped.append(name)
        return reaped

    async def _owner_alive(self, core: k8s.CoreV1Api, namespace: str, owners: list[Any]) -> bool:
        for ref in owners:
            if ref.kind != "Pod" or ref.uid == self.pods.owner_uid:
                continue
            try:
                owner = await core.read_namespaced_pod(ref.name, namespace)
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise
            if owner.metadata.uid == ref.uid and not owner.metadata.deletion_timestamp:
                return True
        return False

    async def exec_in_pod(
        self,
        namespace: str,
        pod: str,
        argv: Sequence[str],
        budget_s: float,
        *,
        container: str | None = None,
    ) -> AsyncGenerator[str, None]:
        """Run ``argv`` (an argument vector: no shell of ours in between) in ``container`` of an existing
        pod, or its first one (pods/exec); yield its stdout lines."""
        self._allow(namespace, Write.POD_EXEC, pod)
        what = f"exec into pod {namespace}/{pod}"
        hint = (
            f"exec into pods in {namespace} (pods/exec needs get and create: install the chart with "
            f"rbac.exec=true and {namespace} in rbac.writableNamespaces)"
        )
        try:
            async with WsApiClient(configuration=self.api.configuration) as ws_api:
                core = k8s.CoreV1Api(ws_api)
                async with asyncio.timeout(budget_s + PROBE_POD_START_SLACK_S):
                    # Without preloading, the websocket client returns aiohttp's ws_connect (typed as str).
                    chosen: dict[str, Any] = {"container": container} if container else {}
                    connect: Any = await core.connect_get_namespaced_pod_exec(
                        pod,
                        namespace,
                        **chosen,
                        command=list(argv),  # type: ignore[arg-type]  # one ?command= per item
                        stderr=True,
                        stdin=False,
                        stdout=True,
                        tty=False,
                        _preload_content=False,
                    )
                    async with connect as ws:
                        lines = _Lines()
                        printed = False
                        errors = bytearray()  # the client's stderr, its tail: why it printed nothing
                        status = b""
                        async for msg in ws:
                            if msg.type not in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                                break
                            data = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
                            channel, payload = data[:1], data[1:]
                            if channel == b"\x01":  # stdout
                                for line in lines.feed(payload):
                                    printed = True
                                    yield line
                            elif channel == b"\x02":  # stderr
                                errors = (errors + payload)[-STDERR_KEPT:]
                            elif channel == b"\x03":  # the exec's final status
                                status = payload[:STDERR_KEPT]
                        for line in lines.rest():
                            printed = True
                            yield line
                        if not printed and (errors or b'"Failure"' in status):
                            raise _exec_failure(what, errors, status, argv[0] if argv else "")
        except ActionError:
            raise
        except Exception as exc:
            raise _ws_or_client_error(exc, what, forbidden_hint=hint) from exc


def _exec_failure(what: str, errors: bytes | bytearray, status: bytes, command: str) -> ActionError:
    """Why an exec printed nothing: the command is missing from the container, or its last stderr line."""
    if b'"Failure"' in status and any(mark in status.lower() for mark in NOT_FOUND_MARKS):
        error = ActionError(f"{what}: the container has no {command!r} command", Refusal.NOT_FOUND)
        error.command_not_found = True
        return error
    tail = errors.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
    return ActionError(f"{what}: the client printed no record ({tail[0][:200]})")


async def reap_leftovers(actions: KubeActions) -> None:
    """At start-up: delete the probe pods an earlier dashboard process left (logged, never fatal)."""
    try:
        reaped = await actions.reap_probe_pods()
    except Exception as exc:  # no list permission, apiserver away: the pods' deadlines still end them
        log.warning("could not look for leftover probe pods: %s", type(exc).__name__)
        return
    if reaped:
        log.info("deleted %d leftover probe pod(s): %s", len(reaped), ", ".join(reaped))


def _api_message(exc: ApiException, what: str, *, forbidden_hint: str) -> str:
    try:
        message = str(json.loads(exc.body or "{}").get("message") or "")
    except (ValueError, AttributeError):
        message = ""
    message = message or str(exc.reason or "error")
    if exc.status == 403 and "PodSecurity" in message:
        # Pod Security admission, not RBAC: the namespace's level forbids what the pod asks for (hostNetwork).
        return f"{what}: {message}"[:500]
    if exc.status == 403:
        return f"the dashboard's ServiceAccount may not {forbidden_hint}"[:500]
    return f"{what}: {message}"[:500]
