"""Kubernetes *actions*: the only writes svcscope ever makes, each only when enabled and allowed by RBAC.

* Probes from other origins: a short-lived probe pod, or exec in a pod (``SVCSCOPE_PROBE_ORIGINS``;
  create/delete pods and get pods/log for ``probe-pod``, create pods/exec for ``exec``). Both run
  ``python3 -m app.echo client …`` (the svcscope image carries it) and return its output lines: one
  answering identity or ``ERROR <kind>`` per request.
* Session affinity of a watched Service (``SVCSCOPE_ALLOW_AFFINITY_PATCH``; patch on services): a merge
  patch of ``spec.sessionAffinity`` and ``spec.sessionAffinityConfig``. The page learns the result from
  the watch like any other change; nothing is read back here.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.stream import WsApiClient

from app.config import Settings
from app.kube.client import ApiTimeout, bounded, create_api_client

log = logging.getLogger(__name__)

MANAGED_BY = "svcscope"


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


async def create_actions(settings: Settings) -> KubeActions | None:
    """KubeActions when a write is enabled (another probe origin or the affinity patch), else None."""
    if not settings.probe_origins and not settings.allow_affinity_patch:
        return None
    api = await create_api_client(
        kubeconfig=settings.kubeconfig, in_cluster=settings.kubernetes_service_host is not None
    )
    return KubeActions(api, image=settings.probe_pod_image)


class KubeActions:
    """Satisfies ``app.state.Actions`` (``app.probe.remote.RemoteProber`` and the affinity patch)."""

    def __init__(self, api: k8s.ApiClient, *, image: str) -> None:
        self.api = api
        self.image = image

    async def close(self) -> None:
        await self.api.close()

    async def patch_session_affinity(self, namespace: str, name: str, change: AffinityChange) -> None:
        """Merge-patch a Service's session affinity; ActionError carries the API's status and message."""
        core = k8s.CoreV1Api(self.api)
        try:
            async with asyncio.timeout(PATCH_TIMEOUT_S):
                await core.patch_namespaced_service(  # type: ignore[call-arg]  # the client takes it at runtime
                    name, namespace, change.patch(), _content_type="application/merge-patch+json"
                )
        except ApiException as exc:
            raise ActionError(
                _api_message(exc, f"Service {namespace}/{name}"),
                API_REFUSALS.get(int(exc.status or 0), Refusal.FAILED),
            ) from exc
        except TimeoutError as exc:
            raise ActionError(f"the apiserver did not answer within {PATCH_TIMEOUT_S:.0f} s") from exc
        except Exception as exc:  # connection errors and the like: a failed action, never a crash
            raise ActionError(f"patching Service {namespace}/{name} failed: {type(exc).__name__}") from exc

    async def probe_pod(
        self, namespace: str, argv: Sequence[str], timeout_s: float, *, name: str | None = None
    ) -> list[str]:
        """Run ``argv`` in a fresh pod of the svcscope image, read its log, delete it."""
        core = k8s.CoreV1Api(self.api)
        name = name or f"svcscope-probe-{secrets.token_hex(4)}"
        pod: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "labels": {
                    "app.kubernetes.io/managed-by": MANAGED_BY,
                    "app.kubernetes.io/component": "probe",
                },
            },
            "spec": {
                "restartPolicy": "Never",
                "activeDeadlineSeconds": int(timeout_s) + 30,
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
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
            },
        }
        what = f"probe pod {namespace}/{name}"
        try:
            await bounded(
                core.create_namespaced_pod(namespace, pod),  # type: ignore[arg-type]  # a dict body is accepted
                f"creating {what}",
            )
        except ApiTimeout as exc:
            raise ActionError(str(exc)) from exc
        try:
            deadline = time.monotonic() + timeout_s + 60
            phase = ""
            while phase not in ("Succeeded", "Failed"):
                if time.monotonic() > deadline:
                    raise ActionError(f"{what} did not finish (phase {phase or 'unknown'})")
                await asyncio.sleep(0.5)  # polling the pod's phase; no watch for one short-lived pod
                try:
                    current = await bounded(core.read_namespaced_pod(name, namespace), f"reading {what}")
                except (ApiTimeout, OSError):  # the pod runs on meanwhile: ask again until the deadline
                    continue
                phase = current.status.phase or ""
            try:
                output: str = await bounded(
                    core.read_namespaced_pod_log(name, namespace, container="probe"),
                    f"reading the log of {what}",
                )
            except ApiTimeout as exc:
                raise ActionError(str(exc)) from exc
            if phase == "Failed" and not output.strip():
                raise ActionError(f"{what} failed without output")
            return output.splitlines()
        finally:
            try:
                await bounded(
                    core.delete_namespaced_pod(name, namespace, grace_period_seconds=0), f"deleting {what}"
                )
            except Exception as exc:  # activeDeadlineSeconds still ends it; say that it was left behind
                log.warning("probe pod %s/%s not deleted: %r", namespace, name, exc)

    async def exec_in_pod(self, namespace: str, pod: str, argv: Sequence[str], timeout_s: float) -> list[str]:
        """Run ``argv`` in the first container of an existing pod (pods/exec)."""
        async with WsApiClient(configuration=self.api.configuration) as ws:
            core = k8s.CoreV1Api(ws)
            out = await asyncio.wait_for(
                core.connect_get_namespaced_pod_exec(
                    pod,
                    namespace,
                    command=list(argv),  # type: ignore[arg-type]  # the client sends one ?command= per item
                    stderr=False,
                    stdin=False,
                    stdout=True,
                    tty=False,
                ),
                timeout_s + 30,
            )
        return str(out).splitlines()


def _api_message(exc: ApiException, what: str) -> str:
    try:
        message = str(json.loads(exc.body or "{}").get("message") or "")
    except (ValueError, AttributeError):
        message = ""
    message = message or str(exc.reason or "error")
    if exc.status == 403:
        return (
            f"the dashboard's ServiceAccount may not patch {what} ({message}); "
            "install the chart with rbac.patchServices=true"
        )
    return f"{what}: {message}"[:500]
