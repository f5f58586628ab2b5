from __future__ import annotations

import sqlite3
from pathlib import Path

from app.probe.stats import Outcome
from app.store import Batch, Kind
from app.store.aggregate import SecondAggregator
from tests.unit.store.factory import open_store, start

PODS = ("echo-a", "echo-b", "echo-c")


def test_a_30_minute_watch_at_200_per_second_stays_small(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.begin(start("w", kind=Kind.WATCH, total=0))
    agg = SecondAggregator(grace_s=3.0)
    rate, duration_s = 200, 30 * 60
    for seq in range(1, rate * duration_s + 1):
        at_ms = (seq - 1) * 1000.0 / rate
        if seq % 97 == 0:
            agg.add(Outcome(seq, None, "refused", 0.4, seq, at_ms=at_ms))
        else:
            agg.add(Outcome(seq, PODS[seq % 3], None, 0.8 + (seq % 11) / 10, seq, at_ms=at_ms))
        if seq % (rate * 5) == 0:  # a write per 5 s of run here; the recorder writes every 0.5 s
            store.append("w", Batch(seconds=tuple(agg.take_closed())))
    store.append("w", Batch(seconds=tuple(agg.take_all())))
    store.close()

    with sqlite3.connect(tmp_path / "runs.db") as db:
        counts = {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("outcomes", "seconds", "second_hits", "second_errors")
        }
        total = db.execute("SELECT sum(requests) FROM seconds").fetchone()[0]
    assert counts == {"outcomes": 0, "seconds": 1800, "second_hits": 1800 * 3, "second_errors": 1800}
    assert total == rate * duration_s
    size = (tmp_path / "runs.db").stat().st_size
    # 360,000 requests in well under a megabyte (about 0.27 MB measured: bench/store.md).
    assert size < 1_000_000, size
