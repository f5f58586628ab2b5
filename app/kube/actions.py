"""Kubernetes *actions* for probes from other origins (H4): a short-lived probe pod, or exec in a pod.

The only writes svcscope ever makes, and only when enabled (``SVCSCOPE_PROBE_ORIGINS``) and allowed by
RBAC (create/delete pods and get pods/log for ``probe-pod``; create pods/exec for ``exec``). Both run
``python3 -m app.echo client …`` (the svcscope image carries it) and return its output lines: one
answering identity or ``ERROR <kind>`` per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Sequence
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.stream import WsApiClient

from app.config import Settings
from app.kube.client import create_api_client
from app.probe.engine import parse_origins

MANAGED_BY = "svcscope"


class ActionError(Exception):
    pass


async def create_remote_prober(settings: Settings) -> KubeActions | None:
    """KubeActions when an origin other than the dashboard is enabled, else None (no extra client)."""
    if not parse_origins(settings.probe_origins):
        return None
    api = await create_api_client(
        kubeconfig=settings.kubeconfig, in_cluster=settings.kubernetes_service_host is not None
    )
    return KubeActions(api, image=settings.probe_pod_image)


class KubeActions:
    """Satisfies ``app.probe.engine.RemoteProber``."""

    def __init__(self, api: k8s.ApiClient, *, image: str) -> None:
        self.api = api
        self.image = image

    async def close(self) -> None:
        await self.api.close()

    async def probe_pod(self, namespace: str, argv: Sequence[str], timeout_s: float) -> list[str]:
        """Run ``argv`` in a fresh pod of the svcscope image, read its log, delete it."""
        core = k8s.CoreV1Api(self.api)
        name = f"svcscope-probe-{secrets.token_hex(4)}"
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
        await core.create_namespaced_pod(namespace, pod)  # type: ignore[arg-type]  # a dict body is accepted
        try:
            deadline = time.monotonic() + timeout_s + 60
            phase = ""
            while phase not in ("Succeeded", "Failed"):
                if time.monotonic() > deadline:
                    raise ActionError(
                        f"probe pod {namespace}/{name} did not finish (phase {phase or 'unknown'})"
                    )
                await asyncio.sleep(0.5)  # polling the pod's phase; no watch for one short-lived pod
                current = await core.read_namespaced_pod(name, namespace)
                phase = current.status.phase or ""
            log: str = await core.read_namespaced_pod_log(name, namespace, container="probe")
            if phase == "Failed" and not log.strip():
                raise ActionError(f"probe pod {namespace}/{name} failed without output")
            return log.splitlines()
        finally:
            with contextlib.suppress(Exception):
                await core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)

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
