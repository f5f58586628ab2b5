"""The exec origin's picker: the running containers a probe may exec into, from the watched pods.

Only pods of namespaces where exec is allowed (the write policy's answer, passed in) and only running ones
that are not going away; svcscope's own probe pods are left out (they end with their run). The list is
bounded: a namespace with thousands of pods still renders a form of a sane size, and the name fields
beside the picker reach any pod.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from app.domain import Pod

MAX_CHOICES = 200
PROBE_POD_LABEL = "app.kubernetes.io/component"  # value "probe" on svcscope's probe pods


@dataclass(frozen=True, slots=True)
class ExecChoice:
    namespace: str
    pod: str
    container: str

    @property
    def value(self) -> str:
        """What the form sends (names never contain "/")."""
        return f"{self.namespace}/{self.pod}/{self.container}"


@dataclass(frozen=True, slots=True)
class ExecChoices:
    choices: tuple[ExecChoice, ...] = ()
    left_out: int = 0  # containers beyond the bound


def exec_choices(
    namespaces: Iterable[str],
    pods_in: Callable[[str], list[Pod]],
    allowed: Callable[[str], bool],
    *,
    limit: int = MAX_CHOICES,
) -> ExecChoices:
    """Every running container of the allowed namespaces, by namespace, pod and spec order; at most
    ``limit`` (``left_out`` counts the rest)."""
    found: list[ExecChoice] = []
    left_out = 0
    for ns in sorted(namespaces):
        if not allowed(ns):
            continue
        for pod in pods_in(ns):
            if pod.phase != "Running" or pod.deleting or pod.labels.get(PROBE_POD_LABEL) == "probe":
                continue
            for container in pod.containers:
                if len(found) < limit:
                    found.append(ExecChoice(ns, pod.key.name, container))
                else:
                    left_out += 1
    return ExecChoices(tuple(found), left_out)


def parse_pick(value: str) -> tuple[str, str, str] | None:
    """namespace, pod, container from a picker value, or None when it is not of that shape."""
    parts = value.split("/")
    if len(parts) != 3 or not all(parts):
        return None
    return parts[0], parts[1], parts[2]
