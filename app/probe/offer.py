"""Which remote origins the probe form offers for a Service: the runner's own check
(:func:`app.probe.remote.refusal`), read the way the server applies it.

The exec origin runs in a pod of any writable namespace (the run's ``exec_namespace``), not only in the
Service's own: the form offers it while some namespace that svcscope knows may be exec'd into, and refuses
it (with the Service namespace's reason, which lists the writable ones) only when none may.
"""

from __future__ import annotations

from collections.abc import Iterable

from app.domain import Origin
from app.probe.remote import RemoteProber, refusal
from app.probe.spec import ProbeSpec
from app.writepolicy import Write


def origin_refusal(remote: RemoteProber, spec: ProbeSpec, namespaces: Iterable[str]) -> str | None:
    """Why the form should not offer ``spec.origin`` for ``spec``'s Service, or None. ``namespaces``: those
    with pods svcscope sees (somewhere to exec into)."""
    reason = refusal(remote, spec)
    if reason is None or spec.origin is not Origin.EXEC or spec.exec_namespace:
        return reason
    name = spec.exec_pod or ""
    if any(remote.refusal(Write.POD_EXEC, ns, name) is None for ns in namespaces):
        return None
    return reason
