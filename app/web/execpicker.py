"""The probe form's exec picker: the running containers of the namespaces the runner may exec into (its
own write check, as for the refusals beside the origin select), and the picked value read back."""

from __future__ import annotations

from dataclasses import replace

from app.catalog.execpick import ExecChoices, exec_choices, parse_pick
from app.domain import Origin
from app.kube.cache import ServiceCache
from app.probe.runner import ProbeRunner
from app.probe.spec import ProbeSpec, SpecError
from app.writepolicy import Write

ANY_POD = "*"  # the pod named in the write check made before a pod is chosen


def picker(cache: ServiceCache, runner: ProbeRunner) -> ExecChoices:
    remote = runner.remote
    if remote is None or Origin.EXEC not in runner.origins:
        return ExecChoices()
    return exec_choices(
        cache.namespaces(), cache.pods_in, lambda ns: remote.refusal(Write.POD_EXEC, ns, ANY_POD) is None
    )


def with_pick(spec: ProbeSpec, pick: str | None) -> ProbeSpec:
    """The spec with the picked namespace, pod and container (exec runs only; empty: the typed names)."""
    if not pick or spec.origin is not Origin.EXEC:
        return spec
    parsed = parse_pick(pick)
    if parsed is None:
        raise SpecError(f"exec_pick {pick!r}: expected namespace/pod/container")
    namespace, pod, container = parsed
    return replace(spec, exec_namespace=namespace, exec_pod=pod, exec_container=container)
