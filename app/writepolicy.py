"""Where the dashboard may write: decided before any API call, with a reason a user can read.

Whoever reaches the dashboard (through ``kubectl port-forward``) can do whatever its ServiceAccount can, so
the chart grants write verbs only in the namespaces listed in ``writableNamespaces`` and creates probe pods
only in the release's own namespace. This module applies the same rules in the app, so that a form is not
offered where the write would be refused, and says why:

* never in ``kube-system``, ``kube-public`` or ``kube-node-lease`` (the cluster's own namespaces);
* never the apiserver's own Service ``default/kubernetes``;
* patching a Service (its session affinity, and the Event recorded on it) and exec into a pod: only in a
  namespace of ``SVCSCOPE_WRITABLE_NAMESPACES``;
* probe pods: only in ``SVCSCOPE_PROBE_POD_NAMESPACE`` (a ClusterIP is reachable from any namespace, so the
  probe pod never needs to live beside the Service).

Whether a feature is switched on at all (``allow_affinity_patch``, ``probe_origins``) is not decided here.
Pure: no web framework, no Kubernetes client.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

# The cluster's own namespaces: control-plane add-ons, the cluster-info ConfigMap, node heartbeats.
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})
# (namespace, name) of the Service through which every pod reaches the apiserver.
APISERVER_SERVICE = ("default", "kubernetes")


class Write(enum.Enum):
    """The writes svcscope makes; the value is how a refusal names it."""

    SERVICE_PATCH = "change Service"  # sessionAffinity, plus an Event on the Service
    POD_EXEC = "run commands in pod"  # pods/exec: the probe client inside an existing pod
    PROBE_POD = "create probe pod"  # a short-lived pod running the probe client


@dataclass(frozen=True, slots=True)
class Decision:
    """``allowed``, or the reason why not, in words for the page (``bool(decision)`` is ``allowed``)."""

    allowed: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.allowed


ALLOWED = Decision(True)


@dataclass(frozen=True, slots=True)
class WritePolicy:
    """The namespaces writes may go to (from Settings ``writable_namespaces`` and ``probe_pod_namespace``)."""

    writable_namespaces: frozenset[str] = frozenset()
    probe_pod_namespace: str | None = None  # None: probe pods nowhere

    @classmethod
    def of(cls, writable_namespaces: Iterable[str], probe_pod_namespace: str | None) -> WritePolicy:
        return cls(frozenset(writable_namespaces), probe_pod_namespace or None)

    def check(self, namespace: str, write: Write, name: str) -> Decision:
        """May svcscope make ``write`` to the object ``namespace/name``?"""
        target = f"{namespace}/{name}"
        if namespace in SYSTEM_NAMESPACES:
            return Decision(
                False, f"svcscope does not {write.value} {target}: {namespace} is one of the cluster's own "
                "namespaces, where it never writes.",
            )  # fmt: skip
        if write is Write.SERVICE_PATCH and (namespace, name) == APISERVER_SERVICE:
            return Decision(
                False, f"svcscope does not {write.value} {target}: it is the apiserver's own Service.",
            )  # fmt: skip
        if write is Write.PROBE_POD:
            return self._probe_pod(namespace, target)
        if namespace not in self.writable_namespaces:
            return Decision(
                False, f"svcscope does not {write.value} {target}: namespace {namespace} is not writable "
                f"({self._writable_list()}; the chart value writableNamespaces sets them).",
            )  # fmt: skip
        return ALLOWED

    def _probe_pod(self, namespace: str, target: str) -> Decision:
        if self.probe_pod_namespace is None:
            return Decision(
                False, f"svcscope does not {Write.PROBE_POD.value} {target}: no namespace is set for probe "
                "pods (SVCSCOPE_PROBE_POD_NAMESPACE; the chart sets its release namespace).",
            )  # fmt: skip
        if namespace != self.probe_pod_namespace:
            return Decision(
                False, f"svcscope does not {Write.PROBE_POD.value} {target}: probe pods run only in "
                f"{self.probe_pod_namespace}, the dashboard's own namespace (they reach a ClusterIP from "
                "there).",
            )  # fmt: skip
        return ALLOWED

    def _writable_list(self) -> str:
        if not self.writable_namespaces:
            return "no namespace is writable"
        return "writable: " + ", ".join(sorted(self.writable_namespaces))
