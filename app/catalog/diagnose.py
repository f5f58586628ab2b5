"""What is wrong (or worth knowing) about a Service, in plain words: one rule after another, each a
pure function of the Service, its endpoint counts, ports, endpoints, selected pods and slices."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.domain import EndpointSlice, Pod, Service, ServiceType
from app.kube.cache import EndpointCounts

if TYPE_CHECKING:  # the detail module builds these and calls diagnose
    from app.catalog.detail import EndpointView, PortView


class Level(enum.StrEnum):
    OK = "ok"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    level: Level
    text: str


def _names(pods: list[str], limit: int = 5) -> str:
    shown = ", ".join(pods[:limit])
    return shown + (f" and {len(pods) - limit} more" if len(pods) > limit else "")


def diagnose(
    svc: Service,
    counts: EndpointCounts,
    ports: list[PortView],
    endpoints: list[EndpointView],
    selected: list[Pod],
    slices: list[EndpointSlice],
) -> list[Diagnostic]:
    """What is wrong (or worth knowing) about a Service, in plain words."""
    out: list[Diagnostic] = []
    add = out.append
    if svc.type is ServiceType.EXTERNAL_NAME:
        add(
            Diagnostic(
                Level.INFO,
                f"ExternalName Service: cluster DNS answers its name with a CNAME to {svc.external_name!r}. "
                "There is no ClusterIP, no endpoints and no proxying by kube-proxy.",
            )
        )
        return out
    if svc.headless:
        add(
            Diagnostic(
                Level.INFO,
                "Headless Service (clusterIP: None): there is no virtual IP and kube-proxy does not balance; "
                "DNS returns the ready endpoints' addresses directly and the client picks one.",
            )
        )
    if svc.selector is None:
        if not slices:
            add(
                Diagnostic(
                    Level.ERROR,
                    "No selector and no EndpointSlices: nothing receives traffic sent to this Service. "
                    "Create EndpointSlices labelled kubernetes.io/service-name=" + svc.key.name + " by hand.",
                )
            )
        else:
            add(
                Diagnostic(
                    Level.INFO, "No selector: its endpoints are managed by hand (or by another controller)."
                )
            )
    else:
        sel = ",".join(f"{k}={v}" for k, v in sorted(svc.selector.items()))
        ready_pods = [p for p in selected if p.ready and not p.deleting]
        if not selected:
            add(
                Diagnostic(
                    Level.ERROR,
                    f"The selector {sel} matches no pods in namespace {svc.key.namespace}: "
                    "check the pod labels (kubectl get pods --show-labels).",
                )
            )
        elif not ready_pods:
            add(
                Diagnostic(
                    Level.ERROR,
                    f"{len(selected)} pod(s) match the selector {sel} but none is Ready: "
                    "no endpoint is ready, so connections fail.",
                )
            )
        elif len(ready_pods) < len(selected):
            not_ready = [p.key.name for p in selected if p not in ready_pods]
            add(
                Diagnostic(
                    Level.WARNING,
                    f"{len(not_ready)} of {len(selected)} matching pods are not Ready and get no traffic: "
                    f"{_names(not_ready)}.",
                )
            )
    if counts.total == 0:
        add(
            Diagnostic(
                Level.ERROR,
                "No endpoints: no EndpointSlice lists an address for this Service, so a connection to "
                "its ClusterIP is refused or times out.",
            )
        )
    elif counts.ready == 0:
        add(
            Diagnostic(
                Level.ERROR, f"None of the {counts.total} endpoint(s) is ready: traffic has nowhere to go."
            )
        )
    for pv in ports:
        target = pv.port.target_port
        if pv.named and pv.missing:
            add(
                Diagnostic(
                    Level.WARNING,
                    f"Port {pv.port.label}: pod(s) {_names(pv.missing)} have no container port named "
                    f"{target!r} ({pv.port.protocol.value}); they get no traffic on this port.",
                )
            )
        if pv.named and len(pv.numbers) > 1:
            mapping = "; ".join(f"{num} on {_names(pods, 3)}" for num, pods in pv.numbers.items())
            add(
                Diagnostic(
                    Level.INFO,
                    f"Named targetPort {target!r} resolves to different numbers per pod ({mapping}). "
                    "That is allowed: each pod is reached on its own number.",
                )
            )
        if counts.total > 0 and pv.ready_endpoints == 0:
            add(
                Diagnostic(
                    Level.WARNING,
                    f"Port {pv.port.label} has no ready endpoint: no EndpointSlice carries this port "
                    "with a ready address.",
                )
            )
    unbacked = [e for e in endpoints if not e.backed_by_pod]
    if unbacked:
        level = Level.INFO if svc.selector is None else Level.WARNING
        addresses = [", ".join(e.endpoint.addresses) for e in unbacked]
        add(
            Diagnostic(
                level,
                f"{len(unbacked)} endpoint(s) are not backed by a known pod: {_names(addresses)}"
                + (" (normal for a Service without selector)." if svc.selector is None else "."),
            )
        )
    terminating = [e for e in endpoints if e.endpoint.conditions.effective_terminating]
    if terminating:
        add(Diagnostic(Level.INFO, f"{len(terminating)} endpoint(s) are terminating (shutting down)."))
    if svc.session_affinity == "ClientIP":
        add(
            Diagnostic(
                Level.INFO,
                f"Session affinity ClientIP: one client IP keeps reaching the same pod for "
                f"{svc.affinity_timeout_s} s after its last connection.",
            )
        )
    if svc.internal_traffic_policy == "Local":
        add(
            Diagnostic(
                Level.INFO,
                "internalTrafficPolicy: Local — a client only reaches endpoints on its own node; "
                "clients on nodes without one get no answer.",
            )
        )
    if not any(d.level in (Level.ERROR, Level.WARNING) for d in out):
        add(Diagnostic(Level.OK, f"{counts.ready} ready endpoint(s) of {counts.total} behind this Service."))
    return out
