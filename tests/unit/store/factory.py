"""Runs, outcomes and endpoint sets for the store tests."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from app.probe.stats import Outcome, RunShape, Summary, summarize
from app.probe.targets import Backend
from app.store import (
    Batch,
    FrozenEndpoints,
    RunEnd,
    RunStart,
    RunStore,
    StoreConfig,
    TargetFacts,
)
from app.store.records import SpecValue

NOW = 1_800_000_000.0  # a fixed wall-clock time for the injectable clock
TARGET = TargetFacts("demo", "echo", "10.96.0.10", 80, "http", "HTTP", "None", None)
SPEC: dict[str, SpecValue] = {
    "namespace": "demo",
    "service": "echo",
    "port": "http",
    "protocol": "HTTP",
    "count": 100,
    "concurrency": 10,
    "reuse": False,
    "method": "GET",
    "path": "/",
    "timeout_s": 2.0,
    "identity": None,
    "origin": "dashboard",
    "exec_pod": None,
}


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def backend(pod: str, ip: str, *, ready: bool = True, node: str = "node-a") -> Backend:
    return Backend(pod, ip, 8080, node, ready, ready, not ready)


PODS_ABC = (backend("echo-a", "10.0.0.1"), backend("echo-b", "10.0.0.2"), backend("echo-c", "10.0.0.3"))
PODS_DEF = (backend("echo-d", "10.0.0.4"), backend("echo-e", "10.0.0.5"), backend("echo-f", "10.0.0.6"))


def outcomes(
    n: int, pods: Sequence[str] = ("echo-a", "echo-b", "echo-c"), *, start: int = 1
) -> list[Outcome]:
    """Round-robin replies with an error every 17th and an unattributed reply every 23rd request."""
    out: list[Outcome] = []
    for seq in range(start, start + n):
        at = seq * 3.7
        if seq % 17 == 0:
            out.append(Outcome(seq, None, "timeout", 2000.0, seq, reason="no reply within 2 s", at_ms=at))
        elif seq % 23 == 0:
            out.append(
                Outcome(seq, None, None, 1.5, seq, reason="no pod name in the reply", status=200, at_ms=at)
            )
        else:
            pod = pods[seq % len(pods)]
            out.append(
                Outcome(seq, pod, None, 0.5 + (seq % 7) / 10, seq, method="auto", status=200, at_ms=at)
            )
    return out


def start(run_id: str = "r1", *, created: float = NOW, total: int = 100, kind: str = "run") -> RunStart:
    return RunStart(
        id=run_id,
        created=created,
        target=TARGET,
        spec=SPEC,
        total=total,
        concurrency=10,
        reuse=False,
        origin="dashboard",
        kind=kind,
        client_pod="svcscope-0",
        client_ip="10.0.0.99",
        endpoints=FrozenEndpoints(PODS_ABC, PODS_ABC),
    )


def shape(total: int = 100, *, changed: bool = False) -> RunShape:
    return RunShape(total, "None", None, False, 10, "HTTP", endpoints_changed=changed, finished=True)


def final_summary(results: Sequence[Outcome], endpoints: FrozenEndpoints, total: int = 100) -> Summary:
    return summarize(results, shape(total), endpoints.current, endpoints.known)


def end(results: Sequence[Outcome], *, status: str = "done", at: float = NOW + 5) -> RunEnd:
    eps = FrozenEndpoints(PODS_ABC, PODS_ABC)
    return RunEnd(
        status=status,
        finished=at,
        elapsed_s=1.25,
        endpoints=eps,
        endpoints_changed=False,
        summary=final_summary(results, eps),
        first_reply_ms=0.9,
    )


def open_store(tmp_path: Path, clock: Clock | None = None, /, **config: Any) -> RunStore:
    return RunStore.open(StoreConfig(tmp_path / "runs.db", **config), clock=clock or Clock())


def finished_run(store: RunStore, run_id: str, *, created: float = NOW, n: int = 20) -> None:
    results = outcomes(n)
    store.begin(start(run_id, created=created))
    store.finish(run_id, end(results, at=created + 1), Batch(outcomes=tuple(results)))


def batches(items: Sequence[Outcome], size: int) -> Iterator[tuple[Outcome, ...]]:
    it = iter(items)
    while chunk := tuple(itertools.islice(it, size)):
        yield chunk
