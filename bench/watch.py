"""Watch mode under load on loopback, no cluster: one watch at 200 requests/s with 20 SSE viewers.

The dashboard runs as its own process (the real app: ``create_app`` under uvicorn, a pre-filled cache, the
watch manager's ``dial`` seam sending the ClusterIP to three echo backends in separate processes, 127.0.0.1
only). This driver opens the viewers' streams and samples the dashboard process from /proc:

- RSS every 5 s: after the warm-up it must stay within ±10 % of its value at the end of the warm-up;
- timeline lag: for each ``timeline`` event a viewer receives, how far its data (the watch's elapsed time in
  the fragment) is behind the watch's clock at arrival, and the longest gap between two updates;
- CPU per request during the watch (20 viewers included) vs normal probe runs (up to 12,000 requests
  each, the median of ``--baseline-runs``) in the same process afterwards (ratio).

    .venv/bin/python -m bench.watch [--seconds 60] [--long] [--rate 200] [--viewers 20]

``--long`` runs 10 minutes with a 1-minute warm-up (the default: 60 s with 20 s of warm-up).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

from bench.engine_local import echo_backends

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
ELAPSED = re.compile(r'data-elapsed="([0-9.]+)"')


async def trace_memory(path: str, warmup: float, every: float = 60.0) -> None:
    """Where the heap grows after the warm-up: the Python allocations that grew most since its end, by
    source line, written to ``path`` every ``every`` seconds (with what tracemalloc traces in all and RSS,
    so that growth outside Python's own objects, e.g. the allocator's fragmentation, shows too)."""
    import tracemalloc

    await asyncio.sleep(warmup)
    base = tracemalloc.take_snapshot()
    rss0 = rss_kib(os.getpid())
    started = time.monotonic()
    while True:
        await asyncio.sleep(every)
        snap = tracemalloc.take_snapshot()
        traced, _ = tracemalloc.get_traced_memory()
        lines = [
            f"after {time.monotonic() - started:.0f} s: traced {traced / 2**20:.1f} MiB, "
            f"RSS {(rss_kib(os.getpid()) - rss0) / 1024:+.1f} MiB since the warm-up"
        ]
        lines += [str(d) for d in snap.compare_to(base, "lineno")[:15]]
        with Path(path).open("a") as f:  # noqa: ASYNC230 (a bench's few lines a minute)
            f.write("\n".join(lines) + "\n\n")


def serve(port: int, backends: list[int], store: str, trace: str | None = None, warmup: float = 0.0) -> None:
    """The dashboard process: the real app on 127.0.0.1:``port`` probing the echo backends, recording into
    the run store at ``store``."""
    import tracemalloc

    import uvicorn

    from app.config import Settings
    from app.lifespan import watch_bounds_from
    from app.main import create_app
    from app.probe.runner import ProbeRunner
    from app.store.runs import store_sinks
    from app.watching import WatchManager
    from tests.unit.fakes import limits, web_view
    from tests.unit.web.test_probes import filled_cache

    pods = {f"198.18.0.{10 + i}": p for i, p in enumerate(backends)}
    turn = iter(range(10**9))

    def dial(host: str, _port: int) -> tuple[str, int]:
        if host in pods:  # calibration probes go to "the pod"
            return "127.0.0.1", pods[host]
        return "127.0.0.1", backends[next(turn) % len(backends)]  # the ClusterIP: round robin

    settings = Settings(csrf_secret="bench", store_path=store)
    cache = filled_cache(SimpleNamespace(view=web_view(len(backends))))  # type: ignore[arg-type]
    app = create_app(settings, cache=cache, start_watchers=False)
    state = app.state.svc
    state.watches = WatchManager(cache, watch_bounds_from(settings), dial=dial)
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[None]:
        async with inner(a):
            state.probe_runner = ProbeRunner(cache, limits(max_count=100_000), dial=dial)
            if state.store is not None:  # both record into the store, as in the shipped app
                state.probe_runner.use_sinks(store_sinks(state.store))
                state.watches.store = state.store
            tracer = None
            if trace:  # started here, after the imports: tracing them would slow the start-up tenfold
                tracemalloc.start()
                tracer = asyncio.create_task(trace_memory(trace, warmup))
            yield
            if tracer is not None:
                tracer.cancel()

    app.router.lifespan_context = lifespan
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def dashboard(
    backends: list[int], trace: str | None = None, warmup: float = 0.0
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    # A run store of its own: a store has one writer, so two benches on the default path would collide.
    tmp = tempfile.TemporaryDirectory(prefix="svcscope-bench-watch-")
    store = str(Path(tmp.name) / "runs.db")
    argv = [sys.executable, "-m", "bench.watch", "--serve", str(port), "--store", store]
    argv += ["--ports", *map(str, backends)]
    if trace:
        argv += ["--tracemalloc", trace, "--warmup", str(warmup)]
    proc = subprocess.Popen(argv, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # a loaded machine takes a while to import the app
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the dashboard did not start")
            time.sleep(0.2)
        yield proc, url
    finally:
        proc.terminate()
        proc.wait(15)
        tmp.cleanup()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@dataclass(frozen=True)
class Usage:
    """A process's CPU so far, user and system apart, and how often its threads went to sleep."""

    user_s: float
    system_s: float
    sleeps: int  # voluntary context switches, all threads

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.system_s

    def __sub__(self, other: Usage) -> Usage:
        return Usage(self.user_s - other.user_s, self.system_s - other.system_s, self.sleeps - other.sleeps)


def usage(pid: int) -> Usage:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    sleeps = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that just ended
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    sleeps += int(line.split()[1])
    return Usage(int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK, sleeps)  # utime, stime


async def viewer(
    c: httpx.AsyncClient,
    watch_id: str,
    offset: list[float],
    lags: list[float],
    gaps: list[float],
    sizes: list[int],
) -> int:
    """Follow the stream to its end; per timeline event: lag behind the watch's clock, gap since the last,
    its size."""
    updates = 0
    last: float | None = None
    async with c.stream("GET", f"/watches/{watch_id}/stream") as r:
        event = ""
        size = 0
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif not line:  # the end of an event: its data lines add up to one update
                if size:
                    sizes.append(size)
                event, size = "", 0
            elif line.startswith("data: ") and event == "timeline":
                size += len(line) - 5
                m = ELAPSED.search(line)
                if m and offset:
                    now = time.monotonic()
                    lags.append(now - offset[0] - float(m.group(1)))
                    if last is not None:
                        gaps.append(now - last)
                    last = now
                    updates += 1
            elif line.startswith("data: ") and event == "done":
                return updates
    return updates


@contextlib.contextmanager
def profiled(py_spy: str | None, pid: int, out: str) -> Iterator[None]:
    """Sample the dashboard with py-spy (``py_spy``: its path; None: not at all) into ``out`` (its raw
    format: one line per distinct stack with its sample count) while the block runs."""
    if py_spy is None:
        yield
        return
    proc = subprocess.Popen([py_spy, "record", "-p", str(pid), "-f", "raw", "-F", "-r", "100", "-o", out])
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its file on an interrupt
        proc.wait(60)


async def bench(
    url: str,
    pid: int,
    seconds: float,
    warmup: float,
    rate: float,
    viewers: int,
    py_spy: str | None = None,
    profile_prefix: str = "",
    baseline_runs: int = 3,
) -> dict[str, Any]:
    # One client for all viewers: creating one per viewer (an SSL context each) stalls this loop for seconds,
    # long enough for the server to drop the poller's idle keep-alive connection.
    limits = httpx.Limits(max_connections=viewers + 5)
    async with (
        httpx.AsyncClient(base_url=url, timeout=30) as c,
        httpx.AsyncClient(base_url=url, timeout=None, limits=limits) as vc,
    ):
        body = {"namespace": "demo", "service": "web", "port": "http", "rate": rate, "duration_s": seconds}
        r = await c.post("/api/v1/watches", json=body)
        r.raise_for_status()
        watch_id = r.json()["id"]
        offset: list[float] = []
        lags: list[float] = []
        gaps: list[float] = []
        sizes: list[int] = []
        tasks = [asyncio.create_task(viewer(vc, watch_id, offset, lags, gaps, sizes)) for _ in range(viewers)]
        # The watch's clock against ours: its elapsed_s at a known moment (fastest of a few round trips).
        samples: list[tuple[float, float]] = []
        for _ in range(600):  # bounded: the watch starts within seconds
            t0 = time.monotonic()
            data = (await c.get(f"/api/v1/watches/{watch_id}")).json()
            t1 = time.monotonic()
            if data["status"] == "running" and data["elapsed_s"] > 0:
                samples.append((t1 - t0, (t0 + t1) / 2 - data["elapsed_s"]))
                if len(samples) == 5:
                    break
            await asyncio.sleep(0.05)
        offset.append(min(samples)[1])
        started = time.monotonic()
        use0, req0 = usage(pid), 0
        rss: list[tuple[float, int]] = []
        with profiled(py_spy, pid, f"{profile_prefix}watch.txt"):
            while time.monotonic() - started < seconds + 2:
                rss.append((time.monotonic() - started, rss_kib(pid)))
                data = (await c.get(f"/api/v1/watches/{watch_id}")).json()
                if data["status"] not in ("starting", "running"):
                    break
                await asyncio.sleep(5)
        data = (await c.get(f"/api/v1/watches/{watch_id}")).json()
        watch_use = usage(pid) - use0
        requests = data["requests"] - req0
        updates = await asyncio.gather(*tasks)
        # Normal runs in the same process, no viewers (per-request CPU: up to 12,000 requests each suffice).
        # One run's figure varies by a quarter between identical runs on this VM, more than the differences
        # measured here, so the baseline is the median of ``baseline_runs`` of them.
        count = max(1000, min(requests, 12_000))
        run_us: list[float] = []
        run_uses: list[Usage] = []
        for i in range(baseline_runs):
            with profiled(py_spy if i == 0 else None, pid, f"{profile_prefix}run.txt"):
                use1 = usage(pid)
                r = await c.post(
                    "/api/v1/probes",
                    json={
                        "namespace": "demo",
                        "service": "web",
                        "port": "http",
                        "count": count,
                        "concurrency": 8,
                    },
                )
                r.raise_for_status()
                run_id = r.json()["id"]
                for _ in range(2400):  # bounded: 20 minutes of polls
                    if (await c.get(f"/api/v1/probes/{run_id}")).json()["status"] != "running":
                        break
                    await asyncio.sleep(0.5)
                run_uses.append(usage(pid) - use1)
                run_us.append(run_uses[-1].cpu_s / count * 1e6)
        median = sorted(range(len(run_us)), key=run_us.__getitem__)[len(run_us) // 2]
        run_use = run_uses[median]
    base = next((kib for t, kib in rss if t >= warmup), rss[-1][1])
    after = [kib for t, kib in rss if t >= warmup]
    total = data["total"]
    return {
        "watch": watch_id,
        "requests": requests,
        "accounted": sum(total["hits"].values()) + total["unattributed"] + sum(total["errors"].values()),
        "errors": total["errors"],
        "skipped": data["skipped"],
        "achieved_rate": requests / max(data["elapsed_s"], 1e-9),
        "rss_base_mib": base / 1024,
        "rss_min_max_mib": (min(after) / 1024, max(after) / 1024),
        "rss_drift_pct": (max(abs(k - base) for k in after) / base * 100) if after else 0.0,
        # One sample a minute, so the shape of a drift shows (a level reached, or a steady climb).
        "rss_by_minute_mib": [kib / 1024 for t, kib in rss if t >= warmup][::12],
        "updates_per_viewer": (min(updates, default=0), max(updates, default=0)),
        "lag_p50_s": statistics.median(lags) if lags else None,
        "lag_max_s": max(lags) if lags else None,
        "gap_max_s": max(gaps) if gaps else None,
        "update_bytes_median": statistics.median(sizes) if sizes else None,
        "watch_cpu_us_per_request": watch_use.cpu_s / max(requests, 1) * 1e6,
        "run_cpu_us_per_request": run_us[median],
        "run_cpu_us_each": run_us,
        "watch_system_share": watch_use.system_s / max(watch_use.cpu_s, 1e-9),
        "run_system_share": run_use.system_s / max(run_use.cpu_s, 1e-9),
        "watch_sleeps_per_request": watch_use.sleeps / max(requests, 1),
        "run_sleeps_per_request": run_use.sleeps / count,
        "run_count": count,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--long", action="store_true", help="10 minutes, 1-minute warm-up")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--viewers", type=int, default=20)
    parser.add_argument(
        "--tracemalloc",
        metavar="FILE",
        help="write the heap's growth since the warm-up to FILE every minute (slows the dashboard: its CPU "
        "numbers are then not comparable)",
    )
    parser.add_argument(
        "--py-spy",
        metavar="PATH",
        help="sample the dashboard with this py-spy during the watch and during the normal run (raw "
        "format, into PREFIXwatch.txt and PREFIXrun.txt; the sampling costs the dashboard CPU too)",
    )
    parser.add_argument("--profile-prefix", default="/tmp/watch-profile-", metavar="PREFIX")
    parser.add_argument(
        "--baseline-runs",
        type=int,
        default=3,
        metavar="N",
        help="normal runs after the watch; the baseline is their median (default 3)",
    )
    parser.add_argument("--warmup", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ports", type=int, nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.ports, args.store, args.tracemalloc, args.warmup or 0.0)
        return
    seconds = 600.0 if args.long else args.seconds
    warmup = 60.0 if args.long else seconds / 3
    with echo_backends() as ports, dashboard(ports, args.tracemalloc, warmup) as (proc, url):
        result = asyncio.run(
            bench(
                url,
                proc.pid,
                seconds,
                warmup,
                args.rate,
                args.viewers,
                args.py_spy,
                args.profile_prefix,
                args.baseline_runs,
            )
        )
    ratio = result["watch_cpu_us_per_request"] / result["run_cpu_us_per_request"]
    print(
        f"\nwatch {args.rate:g} req/s for {seconds:g} s, {args.viewers} SSE viewers, warm-up {warmup:g} s; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n"
    )
    print("| measure | value |\n|---|---:|")
    print(f"| requests sent (accounted as hits+errors) | {result['requests']} ({result['accounted']}) |")
    print(f"| achieved rate | {result['achieved_rate']:.1f} req/s (skipped {result['skipped']}) |")
    print(f"| errors | {result['errors'] or 'none'} |")
    lo, hi = result["rss_min_max_mib"]
    print(f"| RSS after warm-up | {result['rss_base_mib']:.1f} MiB, range {lo:.1f} to {hi:.1f} MiB |")
    print(f"| RSS drift after warm-up | {result['rss_drift_pct']:.1f} % |")
    by_minute = ", ".join(f"{mib:.1f}" for mib in result["rss_by_minute_mib"])
    print(f"| RSS every minute after warm-up | {by_minute} MiB |")
    low, high = result["updates_per_viewer"]
    print(f"| timeline updates per viewer | {low} to {high} |")
    if args.viewers:
        print(f"| timeline lag p50 / max | {result['lag_p50_s']:.2f} s / {result['lag_max_s']:.2f} s |")
        print(f"| longest gap between updates | {result['gap_max_s']:.2f} s |")
        print(f"| timeline update size (median, per viewer) | {result['update_bytes_median']:.0f} bytes |")
    each = ", ".join(f"{us:.0f}" for us in result["run_cpu_us_each"])
    print(
        f"| CPU per request: watch (with viewers) / normal run (median of {len(result['run_cpu_us_each'])} "
        f"runs of {result['run_count']} requests: {each} µs) | "
        f"{result['watch_cpu_us_per_request']:.0f} µs / {result['run_cpu_us_per_request']:.0f} µs "
        f"= {ratio:.2f} |"
    )
    print(
        f"| of it in the kernel: watch / normal run | {result['watch_system_share']:.0%} / "
        f"{result['run_system_share']:.0%} |"
    )
    print(
        f"| voluntary sleeps per request: watch / normal run | {result['watch_sleeps_per_request']:.2f} / "
        f"{result['run_sleeps_per_request']:.2f} |"
    )


if __name__ == "__main__":
    main()
