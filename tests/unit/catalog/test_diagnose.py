"""The diagnostics rules, one cluster situation per row: which messages (level and key words) a Service
gets. The inputs are built by ``service_detail`` from a filled cache, exactly as the page builds them."""

from __future__ import annotations

from typing import Any

import pytest

from app.catalog.detail import service_detail
from app.catalog.diagnose import Level
from app.domain import ObjectKey
from app.kube.cache import ServiceCache
from tests.unit.kube.objects import endpoint, eps, fill, pod
from tests.unit.kube.objects import svc as service

APP = {"app": "web"}
NAMED = [{"name": "http", "port": 80, "targetPort": "web"}]


def pods(*ready: bool, ports: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    return [
        pod(f"web-{i}", ip=f"198.18.0.{10 + i}", labels=APP, ready=r, ports=ports)
        for i, r in enumerate(ready)
    ]


def slice_of(*ready: bool, terminating: bool = False) -> dict[str, Any]:
    eps_ = [
        endpoint(f"198.18.0.{10 + i}", f"web-{i}", ready=r, terminating=terminating)
        for i, r in enumerate(ready)
    ]
    return eps("web-abc", "web", eps_)


CASES: list[
    tuple[str, dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], list[tuple[Level, str]]]
] = [
    (
        "healthy: two ready pods",
        service("web", selector=APP),
        [slice_of(True, True)],
        pods(True, True),
        [(Level.OK, "2 ready endpoint(s) of 2")],
    ),
    (
        "ExternalName: DNS only, nothing else applies",
        service("web", ip=None, type="ExternalName", externalName="db.example.com"),
        [],
        [],
        [(Level.INFO, "CNAME to 'db.example.com'")],
    ),
    (
        "headless: no virtual IP, DNS returns the pods",
        service("web", ip="None", selector=APP),
        [slice_of(True)],
        pods(True),
        [(Level.INFO, "Headless Service"), (Level.OK, "1 ready endpoint(s) of 1")],
    ),
    (
        "no selector and no slices: nothing receives traffic",
        service("web"),
        [],
        [],
        [(Level.ERROR, "No selector and no EndpointSlices"), (Level.ERROR, "No endpoints")],
    ),
    (
        "no selector, a hand-made slice to an address without pod",
        service("web"),
        [eps("web-manual", "web", [endpoint("10.0.0.7")])],
        [],
        [
            (Level.INFO, "managed by hand"),
            (Level.INFO, "not backed by a known pod: 10.0.0.7 (normal for a Service without selector)"),
            (Level.OK, "1 ready endpoint(s) of 1"),
        ],
    ),
    (
        "the selector matches no pod",
        service("web", selector={"app": "nope"}),
        [],
        pods(True),
        [(Level.ERROR, "matches no pods"), (Level.ERROR, "No endpoints")],
    ),
    (
        "pods match but none is Ready",
        service("web", selector=APP),
        [slice_of(False)],
        pods(False),
        [
            (Level.ERROR, "none is Ready"),
            (Level.ERROR, "None of the 1 endpoint(s) is ready"),
            (Level.WARNING, "Port http:80→8080/TCP has no ready endpoint"),
        ],
    ),
    (
        "one of two pods is not Ready",
        service("web", selector=APP),
        [slice_of(True, False)],
        pods(True, False),
        [(Level.WARNING, "1 of 2 matching pods are not Ready and get no traffic: web-1")],
    ),
    (
        "a pod lacks the named targetPort",
        service("web", selector=APP, ports=NAMED),
        [slice_of(True, True)],
        [
            pod("web-0", ip="198.18.0.10", labels=APP),
            pod("web-1", ip="198.18.0.11", labels=APP, ports=[{"name": "other", "containerPort": 9}]),
        ],
        [(Level.WARNING, "pod(s) web-1 have no container port named 'web'")],
    ),
    (
        "the named targetPort resolves to different numbers",
        service("web", selector=APP, ports=NAMED),
        [slice_of(True, True)],
        [
            pod("web-0", ip="198.18.0.10", labels=APP),
            pod("web-1", ip="198.18.0.11", labels=APP, ports=[{"name": "web", "containerPort": 9090}]),
        ],
        [(Level.INFO, "resolves to different numbers per pod"), (Level.OK, "2 ready endpoint(s) of 2")],
    ),
    (
        "endpoints shutting down",
        service("web", selector=APP),
        [slice_of(True, terminating=True)],
        pods(True),
        [(Level.INFO, "1 endpoint(s) are terminating"), (Level.OK, "1 ready endpoint(s) of 1")],
    ),
    (
        "ClientIP affinity and node-local internal traffic are explained",
        service(
            "web",
            selector=APP,
            sessionAffinity="ClientIP",
            sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}},
            internalTrafficPolicy="Local",
        ),
        [slice_of(True)],
        pods(True),
        [
            (Level.INFO, "Session affinity ClientIP: one client IP keeps reaching the same pod for 60 s"),
            (Level.INFO, "internalTrafficPolicy: Local"),
            (Level.OK, "1 ready endpoint(s) of 1"),
        ],
    ),
]


@pytest.mark.parametrize(
    ("situation", "svc", "slices", "pod_list", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_diagnostics(
    situation: str,
    svc: dict[str, Any],
    slices: list[dict[str, Any]],
    pod_list: list[dict[str, Any]],
    expected: list[tuple[Level, str]],
) -> None:
    cache = fill(ServiceCache(), [svc], slices, pod_list)
    detail = service_detail(cache, ObjectKey("default", "web"))
    assert detail is not None
    got = [(d.level, d.text) for d in detail.diagnostics]
    assert [level for level, _ in got] == [level for level, _ in expected], got
    for (_, text), (_, words) in zip(got, expected, strict=True):
        assert words in text
