"""Which Service is the dashboard: the chart labels it app.kubernetes.io/name=svcscope (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.plugin import PluginError

NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
SELECTOR = f"{NAME_LABEL}=svcscope"


@dataclass(frozen=True)
class Target:
    """A release's Service and the port of it to forward."""

    namespace: str
    service: str
    release: str  # the Helm release (app.kubernetes.io/instance); "" when the label is missing
    port: int

    def describe(self) -> str:
        shown = f"{self.namespace}/{self.service}"
        return f"{shown} (release {self.release})" if self.release and self.release != self.service else shown


def targets(services: Mapping[str, Any]) -> list[Target]:
    """The forwardable Services in kubectl's `get services -o json` output, sorted by namespace and name.

    The port is the one named `http` (the chart's), else the first TCP port; a Service without a TCP port
    cannot be port-forwarded and is left out."""
    found = []
    for item in services.get("items") or []:
        if not isinstance(item, Mapping):
            continue
        meta = item.get("metadata") or {}
        labels = meta.get("labels") or {}
        port = _port(item.get("spec") or {})
        name, namespace = meta.get("name"), meta.get("namespace")
        if port is None or not isinstance(name, str) or not isinstance(namespace, str):
            continue
        release = labels.get(INSTANCE_LABEL)
        found.append(Target(namespace, name, release if isinstance(release, str) else "", port))
    return sorted(found, key=lambda t: (t.namespace, t.service))


def _port(spec: Mapping[str, Any]) -> int | None:
    tcp = [
        p
        for p in spec.get("ports") or []
        if isinstance(p, Mapping) and p.get("protocol", "TCP") == "TCP" and isinstance(p.get("port"), int)
    ]
    named = [p for p in tcp if p.get("name") == "http"]
    chosen = named or tcp
    return int(chosen[0]["port"]) if chosen else None


def matching(found: Sequence[Target], release: str | None) -> list[Target]:
    """The targets `--release NAME` means: its Helm release name or its Service's name."""
    if release is None:
        return list(found)
    return [t for t in found if release in (t.release, t.service)]


def choose(found: Sequence[Target], release: str | None, where: str) -> Target:
    """The one target, or an error that lists what there is and names the flag that chooses."""
    wanted = matching(found, release)
    if len(wanted) == 1:
        return wanted[0]
    listing = "".join(f"\n  {t.describe()}" for t in (wanted or found))
    if not wanted and release is not None:
        others = f"; svcscope Services there:{listing}" if found else ""
        raise PluginError(f"no svcscope release {release!r} {where}{others}")
    if not wanted:
        raise PluginError(
            f"no svcscope Service ({SELECTOR}) {where}: is the chart installed? Name its namespace with "
            "-n NAMESPACE"
        )
    namespaces = {t.namespace for t in wanted}
    hint = "--release NAME" if release is None else "-n NAMESPACE"
    if release is None and len(namespaces) > 1:
        hint += " (and -n NAMESPACE where a name repeats)"
    raise PluginError(f"{len(wanted)} svcscope releases {where}:{listing}\nchoose one with {hint}")
