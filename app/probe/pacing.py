"""Paced runs: requests one at a time with a wait between them, and optionally a longer pause after every
N-th request, to show session affinity over time (a steady stream refreshing kube-proxy's ClientIP entry
versus a pause that lets it expire).

Pure: the checks and the wait before each request. The engine sleeps what ``wait_before`` says. The waits
are bounded so that the whole run fits in the run deadline with room for its requests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_WAIT_S = 600.0  # one interval or one pause


class PacingError(ValueError):
    """Pacing parameters that cannot be honoured (the message says why)."""


@dataclass(frozen=True, slots=True)
class Pacing:
    interval_s: float = 0.0  # wait after each request before the next one
    pause_after: int = 0  # pause after every pause_after-th request (0: never)
    pause_s: float = 0.0  # how long, on top of the interval

    @property
    def paced(self) -> bool:
        return self.interval_s > 0 or (self.pause_after > 0 and self.pause_s > 0)

    def pauses(self, count: int) -> int:
        """Pauses in a run of ``count`` requests (none after the last request)."""
        if self.pause_after <= 0 or self.pause_s <= 0:
            return 0
        return (count - 1) // self.pause_after

    def planned_wait_s(self, count: int) -> float:
        """The time a run of ``count`` requests spends waiting, besides its requests."""
        return max(0, count - 1) * self.interval_s + self.pauses(count) * self.pause_s

    def wait_before(self, seq: int) -> float:
        """Seconds to wait before request ``seq`` (1-based): nothing before the first."""
        if seq <= 1:
            return 0.0
        wait = self.interval_s
        if self.pause_after > 0 and (seq - 1) % self.pause_after == 0:
            wait += self.pause_s
        return wait

    def describe(self) -> str:
        parts = []
        if self.interval_s > 0:
            parts.append(f"{self.interval_s:g} s between requests")
        if self.pause_after > 0 and self.pause_s > 0:
            parts.append(f"a {self.pause_s:g} s pause after every {self.pause_after} request(s)")
        return ", ".join(parts) or "not paced"


def checked(
    pacing: Pacing,
    *,
    count: int,
    concurrency: int,
    reuse: bool,
    dashboard: bool,
    timeout_s: float,
    deadline_s: float,
) -> Pacing:
    """``pacing`` if a run can honour it within ``deadline_s``, else a PacingError saying why."""
    for name, value in (("interval_s", pacing.interval_s), ("pause_s", pacing.pause_s)):
        if not (math.isfinite(value) and 0 <= value <= MAX_WAIT_S):
            raise PacingError(f"{name} must be between 0 and {MAX_WAIT_S:g} seconds")
    if not 0 <= pacing.pause_after <= count:
        raise PacingError(f"pause_after must be between 0 (no pause) and the count ({count})")
    if (pacing.pause_after > 0) != (pacing.pause_s > 0):
        raise PacingError(
            "pause_after and pause_s go together: pause pause_s seconds after every pause_after-th request"
        )
    if not pacing.paced:
        return pacing
    if not dashboard:
        raise PacingError("pacing applies to origin dashboard only")
    if concurrency != 1:
        raise PacingError("a paced run sends one request at a time: set concurrency to 1")
    if reuse:
        raise PacingError(
            "a paced run opens a new connection per request (kube-proxy picks a pod per connection): "
            "turn reuse off"
        )
    wait = pacing.planned_wait_s(count)
    worst = wait + count * timeout_s
    if worst > deadline_s:
        raise PacingError(
            f"this paced run could take {worst:.0f} s ({wait:.0f} s of waits plus {count} requests of up to "
            f"{timeout_s:g} s), longer than the run deadline of {deadline_s:.0f} s: fewer requests, shorter "
            "waits or a shorter timeout"
        )
    return pacing
