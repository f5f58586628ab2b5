"""Where a run's results go besides memory: the seam through which the run store records a run.

The probe package knows nothing of the store (the store sits above it); the lifespan hands the runner a
``SinkFactory`` that opens a store-backed ``RunSink`` for each run. Without one (development, tests) runs
live in memory only (``NULL_SINK``). Every method but ``close`` is a plain call on the run's hot path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from app.probe.stats import Outcome
from app.probe.targets import Backend

if TYPE_CHECKING:
    from app.probe.run import Run


class RunSink(Protocol):
    @property
    def saved(self) -> bool:
        """Whether everything handed over so far is (or will be) stored."""
        ...

    def add(self, outcome: Outcome, sample: tuple[str, str] | None) -> None:
        """One result; ``sample`` is (key, text) when the run keeps a reply sample for it."""

    def note_endpoints(self, current: tuple[Backend, ...], known: tuple[Backend, ...], changed: bool) -> None:
        """The endpoints as they are now and every one seen, whenever they change."""

    def note_attribution(self, mode: str, note: str, rule: str | None) -> None: ...

    def note_started(self, wall_time: float) -> None:
        """The first request is about to go out (epoch seconds)."""

    async def close(self, run: Run) -> None:
        """The run ended (its status, error and final summary are set): record the end."""


class NullSink:
    """Keeps nothing: runs live in memory only."""

    saved = False

    def add(self, outcome: Outcome, sample: tuple[str, str] | None) -> None:
        pass

    def note_endpoints(self, current: tuple[Backend, ...], known: tuple[Backend, ...], changed: bool) -> None:
        pass

    def note_attribution(self, mode: str, note: str, rule: str | None) -> None:
        pass

    def note_started(self, wall_time: float) -> None:
        pass

    async def close(self, run: Run) -> None:
        pass


NULL_SINK = NullSink()

# Opens the sink of a run that is about to start (the store's "begin"); never raises for a storage
# failure (a run that cannot be saved still runs, with a sink that says so).
SinkFactory = Callable[["Run"], Awaitable[RunSink]]
