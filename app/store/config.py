"""Where the run store lives and how much it keeps (filled from Settings by the lifespan)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class StoreConfig:
    path: Path
    max_runs: int = 500  # finished runs kept; the oldest beyond this are deleted
    max_age_s: float = 7 * DAY_S  # finished runs older than this are deleted
    max_outcomes_per_run: int = 10_000  # per-request rows of one run; beyond this only per-second aggregates
    # The file's budget: the oldest finished runs go first when the data outgrows it. Keep it below the
    # volume's size (an emptyDir over its sizeLimit gets the pod evicted).
    max_bytes: int = 256 * 1024 * 1024
    max_tombstones: int = 5_000  # ids of deleted runs remembered to explain a 404
    busy_timeout_s: float = 5.0  # how long a statement waits for a lock before it fails (never a hang)
    check_on_open: bool = True  # PRAGMA quick_check at open: a damaged file fails at start-up, not mid-run

    def __post_init__(self) -> None:
        if self.max_runs < 1:
            raise ValueError("max_runs must be at least 1")
        if self.max_age_s <= 0:
            raise ValueError("max_age_s must be positive")
        if self.max_bytes < 1024 * 1024:
            raise ValueError("max_bytes must be at least 1 MiB")
        if self.max_outcomes_per_run < 0 or self.max_tombstones < 0:
            raise ValueError("max_outcomes_per_run and max_tombstones must not be negative")
