"""The live strip of a running run: each cell drawn once for all viewers, every viewer still gets each cell
exactly once and in order (a reconnect from anywhere included)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.probe.run import Run
from app.web import probes, render
from app.web.runstrip import StripLog
from tests.unit.fakes import make_cluster
from tests.unit.web.test_probes import BODY
from tests.unit.web.test_probes_store import dashboard

pytestmark = pytest.mark.timeout(60)


def drawn(calls: list[tuple[int, int]]) -> Any:
    def render(a: int, b: int) -> str:
        calls.append((a, b))
        return "".join(f"[{i}]" for i in range(a, b))

    return render


def test_viewers_at_the_same_cursor_share_the_pieces() -> None:
    calls: list[tuple[int, int]] = []
    log = StripLog({"web-0": 0})
    render = drawn(calls)
    first = [log.cells(0, 3, render) for _ in range(5)]
    assert first == ["[0][1][2]"] * 5
    later = [log.cells(3, 7, render) for _ in range(5)]
    assert later == ["[3][4][5][6]"] * 5
    # A viewer that connects now gets everything from the start, from the same two pieces.
    assert log.cells(0, 7, render) == "".join(f"[{i}]" for i in range(7))
    assert calls == [(0, 3), (3, 7)] and log.renders == 2


def test_a_viewer_behind_gets_all_pieces_since_its_cursor_and_a_reconnect_its_own() -> None:
    calls: list[tuple[int, int]] = []
    log = StripLog({})
    render = drawn(calls)
    log.cells(0, 2, render)
    log.cells(2, 4, render)
    assert log.cells(2, 9, render) == "".join(f"[{i}]" for i in range(2, 9))  # one new piece, 4 to 9
    assert log.cells(3, 9, render) == "".join(f"[{i}]" for i in range(3, 9))  # Last-Event-ID 3: drawn for it
    assert calls == [(0, 2), (2, 4), (4, 9), (3, 9)]


async def strip_seen(c: httpx.AsyncClient, run: Run, arrive_at: int) -> list[int]:
    """The requests whose cells a viewer arriving after ``arrive_at`` results got in its strip events."""
    # Viewers arrive one after another as the run goes on: each starts with its own cursor.
    while len(run.results) < arrive_at and not run.finished:
        await run.wait_changed()
    text = (await c.get(f"/runs/{run.id}/stream")).text
    strip = "".join(block for block in text.split("\n\n") if block.startswith("event: strip"))
    return [int(n) for n in re.findall(r'aria-label="request (\d+):', strip)]


async def test_many_viewers_of_a_running_run_draw_each_cell_about_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn_cells = 0
    real = render.fragment

    def counting(templates: Any, template: str, **context: Any) -> str:
        nonlocal drawn_cells
        if template == "partials/_probe_strip_cells.html":
            drawn_cells += len(context["cells"])
        return real(templates, template, **context)

    monkeypatch.setattr("app.web.probes.fragment", counting)
    monkeypatch.setattr(probes, "STRIP_MAX", 150)
    viewers = 12
    async for cluster in make_cluster(3):
        async with dashboard(cluster, tmp_path / "runs.db") as (c, state):
            run_id = (await c.post("/api/v1/probes", json={**BODY, "count": 300, "concurrency": 2})).json()[
                "id"
            ]

            assert state.probe_runner is not None
            run = state.probe_runner.get(run_id)
            assert run is not None

            seen = await asyncio.gather(*(strip_seen(c, run, i * 10) for i in range(viewers)))
    live = [cells for cells in seen if cells]
    assert len(live) >= viewers // 2  # most viewers followed the run while it was running
    for cells in live:  # each cell once, in order, up to the strip's bound
        assert cells == list(range(1, len(cells) + 1)) and len(cells) == 150
    sent = sum(len(cells) for cells in live)
    # Each cell drawn once (again only if a pod's colour changed), not once per viewer.
    assert drawn_cells <= 2 * 150, f"{drawn_cells} cells drawn for {sent} sent"
