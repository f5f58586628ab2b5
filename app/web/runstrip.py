"""A running run's live strip, each cell rendered once however many viewers follow the run.

Viewers connect at different moments, so each one's cursor (the cells it already has) differs; rendering
"the cells from my cursor to the newest" per viewer renders the same cells over and over (100 viewers of a
run that has 2,000 results: 200,000 cells, enough to keep the event loop busy for seconds). Instead the
strip is kept as pieces: each new stretch of results is rendered once, when the first viewer needs it, and
a viewer whose cursor is where a piece starts is sent the pieces from there on. Every viewer starts at 0 and
then at the end of what it was sent, so all but a reconnect (which resumes at its Last-Event-ID, anywhere)
are served from shared pieces.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping


class StripLog:
    """The pieces of one run's live strip, rendered with one colour per pod (``colors``)."""

    __slots__ = ("_ends", "_pieces", "_start", "colors", "renders")

    def __init__(self, colors: Mapping[str, int]) -> None:
        self.colors = dict(colors)
        self.renders = 0  # pieces rendered (for tests and benches)
        self._pieces: list[str] = []
        self._ends: list[int] = [0]  # piece i covers cells _ends[i] to _ends[i + 1]
        self._start: dict[int, int] = {0: 0}  # a piece's first cell -> its index

    def cells(self, cursor: int, end: int, render: Callable[[int, int], str]) -> str:
        """Cells ``cursor`` to ``end``; ``render(a, b)`` draws cells a to b when no shared piece has them."""
        last = self._ends[-1]
        if end > last:
            self._pieces.append(render(last, end))
            self.renders += 1
            self._ends.append(end)
            self._start[end] = len(self._pieces)
        index = self._start.get(cursor)
        if index is None or end != self._ends[-1]:
            # A reconnect resuming between two pieces (or a run whose results went back): its own render.
            self.renders += 1
            return render(cursor, end)
        return "".join(self._pieces[index:])
