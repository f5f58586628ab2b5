"""Per-second aggregates of a run's outcomes (pure): hits per pod, errors by kind, latency p50/p95, in the
probe layer's ``SecondBucket`` / ``Second`` (the same per-second type a live watch folds its outcomes into).

A second is keyed by when its requests *started*. A request that started in second ``s`` reports at the
latest ``timeout`` later, so second ``s`` is closed (can no longer change) once an outcome has reported
after ``(s + 1) s + grace``: time is read from the outcomes themselves, so the result does not depend on
when the caller happens to flush. An outcome that still arrives for a closed second (a late scheduler)
opens that second again; the store adds its counts to the stored row.
"""

from __future__ import annotations

import math

from app.probe.stats import Outcome
from app.probe.watch import Second, SecondBucket


class SecondAggregator:
    def __init__(self, grace_s: float) -> None:
        """``grace_s``: the longest a request may take to report (its timeout plus a margin)."""
        self._grace_ms = grace_s * 1000.0
        self._open: dict[int, SecondBucket] = {}
        self._latest_ms = 0.0  # the latest report time seen (run-relative)

    @property
    def pending(self) -> int:
        return len(self._open)

    def add(self, o: Outcome) -> None:
        second = max(0, math.floor(o.at_ms / 1000.0))
        bucket = self._open.get(second)
        if bucket is None:
            bucket = self._open[second] = SecondBucket()
        bucket.add(o)
        self._latest_ms = max(self._latest_ms, o.at_ms + (o.latency_ms or 0.0))

    def take_closed(self) -> list[Second]:
        """The seconds that no request still under way can change, removed from the open set."""
        done = [s for s in self._open if (s + 1) * 1000.0 + self._grace_ms <= self._latest_ms]
        return [self._open.pop(s).close(s) for s in sorted(done)]

    def take_all(self) -> list[Second]:
        """Every open second (the run ended: nothing more will report)."""
        out = [self._open[s].close(s) for s in sorted(self._open)]
        self._open.clear()
        return out
