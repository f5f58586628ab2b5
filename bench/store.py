"""The run store: what recording costs a run, and how big the file gets.

Not a test: a measurement on this machine, no cluster needed.

    .venv/bin/python -m bench.store [--rounds 5]

1. The hot path: 10,000 outcomes appended to the run's in-memory list (what a run does today) against the
   same plus ``RunRecorder.add`` with its background writes running, in the same process and loop.
   Event-loop CPU (``time.thread_time`` of the loop's thread: the writer thread's work is not on the loop)
   and wall time until everything is on disk.
2. The synchronous core: outcomes per second by batch size, one transaction per batch.
3. Sizes: one 10,000-request run; a 30-minute watch at 200 requests/s (per-second aggregates only);
   opening (with ``quick_check``) and pruning a store full of large runs.

Prints Markdown (copied into bench/store.md).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from app.probe.stats import Outcome, RunShape, summarize
from app.probe.targets import Backend
from app.store import (
    AsyncRunStore,
    Batch,
    FrozenEndpoints,
    Kind,
    RunEnd,
    RunRecorder,
    RunStart,
    RunStore,
    StoreConfig,
    TargetFacts,
)
from app.store.aggregate import SecondAggregator
from app.store.records import SpecValue

TARGET = TargetFacts("demo", "echo", "10.96.0.10", 80, "http", "HTTP", "None", None)
COUNT = 10_000


def pods(n: int) -> tuple[Backend, ...]:
    return tuple(
        Backend(f"echo-7d9f8b6c5-{i:05d}", f"10.244.0.{i + 10}", 8080, "node-a", True, True, False)
        for i in range(n)
    )


def outcomes(n: int, names: tuple[str, ...]) -> list[Outcome]:
    """Replies like a real run's: a pod, a latency, a status, an error now and then."""
    out = []
    for seq in range(1, n + 1):
        at = seq * 0.7
        if seq % 101 == 0:
            out.append(Outcome(seq, None, "timeout", 2000.0, seq, reason="no reply within 2 s", at_ms=at))
        else:
            latency = 0.35 + (seq * 7919 % 1000) / 997
            out.append(
                Outcome(seq, names[seq % len(names)], None, latency, seq, method="auto", status=200, at_ms=at)
            )
    return out


def run_start(run_id: str, *, created: float, total: int = COUNT, kind: str = Kind.RUN) -> RunStart:
    eps = pods(3)
    spec: dict[str, SpecValue] = {
        "namespace": "demo",
        "service": "echo",
        "port": "http",
        "protocol": "HTTP",
        "count": total,
    }
    return RunStart(run_id, created, TARGET, spec, total, 8, False, "dashboard", kind, "svcscope-0",
                    "10.244.0.2", FrozenEndpoints(eps, eps))  # fmt: skip


def run_end(results: list[Outcome], at: float) -> RunEnd:
    eps = FrozenEndpoints(pods(3), pods(3))
    shape = RunShape(len(results), "None", None, False, 8, "HTTP", finished=True)
    summary = summarize(results, shape, eps.current, eps.known)
    return RunEnd("done", at, 3.2, eps, False, summary, first_reply_ms=0.8)


def file_size(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# -- 1. the hot path --------------------------------------------------------------------------------


async def hot_path(tmp: Path, *, with_store: bool, results: list[Outcome]) -> tuple[float, float, int]:
    """(loop CPU s, wall s until durable, transactions)."""
    store = await AsyncRunStore.open(StoreConfig(tmp / f"hot-{time.monotonic_ns()}.db"))
    await store.begin(run_start("r", created=time.time()))
    kept: list[Outcome] = []
    rec = RunRecorder(store, "r", timeout_s=2.0)
    if with_store:
        rec.start()
    before = store.store.transactions
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    for i, o in enumerate(results):
        kept.append(o)
        if with_store:
            rec.add(o)
        if i % 8 == 0:
            await asyncio.sleep(0)  # a run awaits the network between results
    if with_store:
        await rec.finish(run_end(results, time.time()))
    cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
    transactions = store.store.transactions - before
    await store.aclose()
    return cpu, wall, transactions


def row(name: str, cpu: float, wall: float, transactions: int) -> str:
    return f"| {name} | {cpu * 1e3:.1f} | {cpu / COUNT * 1e6:.2f} | {wall * 1e3:.1f} | {transactions} |"


async def bench_hot_path(tmp: Path, rounds: int) -> list[str]:
    results = outcomes(COUNT, tuple(b.pod or "" for b in pods(3)))
    base, rec = [], []
    tx = 0
    for _ in range(rounds):  # alternate, so drift on a shared machine hits both alike
        base.append(await hot_path(tmp, with_store=False, results=results))
        rec.append(await hot_path(tmp, with_store=True, results=results))
        tx = rec[-1][2]
    b_cpu = statistics.median(r[0] for r in base)
    r_cpu = statistics.median(r[0] for r in rec)
    b_wall = statistics.median(r[1] for r in base)
    r_wall = statistics.median(r[1] for r in rec)
    return [
        f"### Hot path: {COUNT:,} outcomes, medians of {rounds} alternating rounds",
        "",
        "| variant | loop CPU ms | µs/outcome | wall ms (until on disk) | write transactions |",
        "|---|---:|---:|---:|---:|",
        row("in-memory list only (baseline)", b_cpu, b_wall, 0),
        row("list + RunRecorder (store)", r_cpu, r_wall, tx),
        "",
        f"Ratio store/baseline: loop CPU **{r_cpu / b_cpu:.2f}x**, wall {r_wall / b_wall:.2f}x; "
        f"added loop CPU per outcome {(r_cpu - b_cpu) / COUNT * 1e6:.2f} µs.",
        "",
    ]


# -- 2. the synchronous core ------------------------------------------------------------------------


def bench_core(tmp: Path) -> list[str]:
    results = outcomes(COUNT, tuple(b.pod or "" for b in pods(3)))
    lines = [
        f"### Synchronous core: appending {COUNT:,} outcomes",
        "",
        "| batch size | transactions | ms | outcomes/s |",
        "|---:|---:|---:|---:|",
    ]
    for size in (1, 100, 1000, COUNT):
        store = RunStore.open(StoreConfig(tmp / f"core-{size}.db"))
        store.begin(run_start("r", created=time.time()))
        chunks = [tuple(results[i : i + size]) for i in range(0, COUNT, size)]
        before = store.transactions
        t0 = time.perf_counter()
        for chunk in chunks:
            store.append("r", Batch(outcomes=chunk))
        seconds = time.perf_counter() - t0
        lines.append(
            f"| {size} | {store.transactions - before} | {seconds * 1e3:.0f} | {COUNT / seconds:,.0f} |"
        )
        store.close()
    return [*lines, ""]


# -- 3. sizes ---------------------------------------------------------------------------------------


def one_run_size(tmp: Path) -> tuple[int, int]:
    """Bytes of an empty store, and added by one finished 10,000-request run."""
    path = tmp / "size-run.db"
    store = RunStore.open(StoreConfig(path))
    store.close()
    empty = file_size(path)
    store = RunStore.open(StoreConfig(path))
    results = outcomes(COUNT, tuple(b.pod or "" for b in pods(3)))
    agg = SecondAggregator(3.0)
    for o in results:
        agg.add(o)
    store.begin(run_start("r", created=time.time()))
    store.finish(
        "r", run_end(results, time.time()), Batch(outcomes=tuple(results), seconds=tuple(agg.take_all()))
    )
    store.close()  # checkpoints the WAL into the file
    return empty, file_size(path) - empty


def watch_size(tmp: Path, n_pods: int, rate: int = 200, minutes: int = 30) -> tuple[int, int, float]:
    """(bytes, aggregate rows, seconds to build) of a watch, written every 0.5 s of run time as the recorder
    does."""
    path = tmp / f"watch-{n_pods}.db"
    store = RunStore.open(StoreConfig(path))
    store.close()
    empty = file_size(path)
    store = RunStore.open(StoreConfig(path))
    names = tuple(b.pod or "" for b in pods(n_pods))
    store.begin(run_start("w", created=time.time(), total=0, kind=Kind.WATCH))
    agg = SecondAggregator(3.0)
    t0 = time.perf_counter()
    for seq in range(1, rate * minutes * 60 + 1):
        at = (seq - 1) * 1000.0 / rate
        agg.add(Outcome(seq, names[seq % n_pods], None, 0.5 + (seq % 13) / 10, seq, at_ms=at))
        if seq % (rate // 2) == 0:
            store.append("w", Batch(seconds=tuple(agg.take_closed())))
    store.append("w", Batch(seconds=tuple(agg.take_all())))
    took = time.perf_counter() - t0
    rows = sum(
        store._db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("seconds", "second_hits", "second_errors")
    )
    store.close()
    return file_size(path) - empty, rows, took


def full_store(tmp: Path, runs: int) -> list[str]:
    """Open (with quick_check) and prune a store holding ``runs`` finished 10,000-request runs."""
    path = tmp / "full.db"
    store = RunStore.open(StoreConfig(path))
    results = outcomes(COUNT, tuple(b.pod or "" for b in pods(3)))
    now = time.time()
    for i in range(runs):
        store.begin(run_start(f"r{i}", created=now - runs + i))
        store.finish(f"r{i}", run_end(results, now), Batch(outcomes=tuple(results)))
    store.close()
    size = file_size(path)
    t_open = timed(lambda: RunStore.open(StoreConfig(path)).close())
    t_open_nocheck = timed(lambda: RunStore.open(StoreConfig(path, check_on_open=False)).close())
    store = RunStore.open(StoreConfig(path, max_runs=runs - 10))
    t_prune = timed(store.prune)
    store.close()
    return [
        f"### A store holding {runs} finished {COUNT:,}-request runs ({size / 1e6:.1f} MB)",
        "",
        f"- open with `quick_check`: {t_open * 1e3:.0f} ms; without: {t_open_nocheck * 1e3:.0f} ms",
        f"- prune deleting the 10 oldest runs ({10 * COUNT:,} outcome rows): {t_prune * 1e3:.0f} ms",
        "",
    ]


def bench_sizes(tmp: Path) -> list[str]:
    empty, run = one_run_size(tmp)
    lines = [
        "### Sizes",
        "",
        "| what | bytes | per request |",
        "|---|---:|---:|",
        f"| empty store | {empty:,} | |",
        f"| one finished {COUNT:,}-request run (outcomes, aggregates, endpoints, summary) "
        f"| {run:,} | {run / COUNT:.0f} |",
    ]
    for n in (3, 10):
        size, rows, took = watch_size(tmp, n)
        lines.append(
            f"| 30-minute watch, 200 req/s, {n} pods: {rows:,} aggregate rows (built in {took:.1f} s) "
            f"| {size:,} | {size / (200 * 1800):.2f} |"
        )
    lines += [
        "",
        f"500 runs of {COUNT:,} requests (the count limit, worst case) need ≈ {500 * run / 1e6:.0f} MB: "
        f"`max_bytes` ({StoreConfig(tmp).max_bytes / 2**20:g} MiB by default) deletes the oldest first.",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--full-runs", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        lines = asyncio.run(bench_hot_path(tmp, args.rounds))
        lines += bench_core(tmp)
        lines += bench_sizes(tmp)
        lines += full_store(tmp, args.full_runs)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
