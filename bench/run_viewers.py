"""Many viewers watching probe runs finish: the dashboard's memory and how fast it still answers.

Not a test: a measurement on the real devcluster. The dashboard runs in the node's network namespace
with the run store on; it probes a 3-pod echo Service. ``--runs`` runs of ``--count`` requests start
together, each followed by ``--viewers`` live streams (``/runs/{id}/stream``, read to their ``done``
event); meanwhile the dashboard's RSS is sampled every 100 ms and ``GET /`` is timed every 250 ms by a
process of its own (the client of 400 streams, busy itself, would otherwise delay the reads it times).

    .venv/bin/python -m bench.run_viewers [--runs 4] [--viewers 100] [--count 10000] [--concurrency 32]
        [--env NAME=VALUE ...] [--nice N]

Prints the numbers as Markdown (copied into bench/faults.md).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.probe_rate import cluster_handle
from tests.e2e.conftest import deploy_echo_app
from tests.e2e.dashboard import probe_body, start_dashboard, wait_serving

SAMPLE_S = 0.1
CLK_TCK = os.sysconf("SC_CLK_TCK")
LATENCY_EVERY_S = 0.25
IDLE_SAMPLES = 20
RUN_DEADLINE_S = 600.0  # the whole measurement, bounded


def dashboard_pid(port: int) -> int:
    """The uvicorn process serving ``port`` (the node's processes share the host's PID namespace)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args[1:3] == [b"-m", b"uvicorn"] and str(port).encode() in args:
            return int(entry.name)
    raise SystemExit(f"no uvicorn process on port {port}")


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no {field} for pid {pid}: the dashboard exited")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


async def follow(c: httpx.AsyncClient, run_id: str) -> tuple[int, float]:
    """Read one run's stream to its end; returns (bytes, seconds until the done event)."""
    total = 0
    started = time.monotonic()
    done_at: float | None = None
    async with c.stream("GET", f"/runs/{run_id}/stream") as r:
        assert r.status_code == 200, r.status_code
        async for line in r.aiter_lines():
            total += len(line) + 1
            if line == "event: done":
                done_at = time.monotonic()
            elif line == "" and done_at is not None:  # the end of the done event
                break
    return total, (done_at or time.monotonic()) - started


def raise_priority(pid: int, nice: int) -> None:
    """Give every thread of ``pid`` the niceness ``-nice`` (Linux's nice value is per thread; threads
    started later inherit it from the thread that starts them)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.setpriority(os.PRIO_PROCESS, int(task.name), -nice)


def pinger(base_url: str, go: Any, stop: Any, out: Any, nice: int) -> None:
    """``GET /`` timed in a process of its own (so that the 400 streams' client cannot delay its reads):
    first ``IDLE_SAMPLES`` before anything runs, then every ``LATENCY_EVERY_S`` from ``go`` to ``stop``."""
    if nice:
        raise_priority(os.getpid(), nice)
    with httpx.Client(base_url=base_url, timeout=120.0) as c:

        def timed() -> float:
            t = time.monotonic()
            r = c.get("/")
            if r.status_code != 200:  # counted, not fatal: the measurement goes on (a 500 is a finding)
                print(f"GET / answered {r.status_code}: {r.text[:200]!r}", flush=True)
            return (time.monotonic() - t) * 1000

        idle = []
        for _ in range(IDLE_SAMPLES):
            idle.append(timed())
            time.sleep(LATENCY_EVERY_S)
        out.put(idle)
        go.wait(RUN_DEADLINE_S)
        cpu0 = own_cpu_s()
        busy = []
        while not stop.is_set():
            busy.append(timed())
            time.sleep(LATENCY_EVERY_S)
        out.put((busy, own_cpu_s() - cpu0))


async def measure(
    base_url: str, pid: int, bodies: list[dict[str, Any]], viewers: int, nice: int = 0
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=len(bodies) * viewers + 20, max_keepalive_connections=20)
    rss: list[float] = []
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            rss.append(rss_mb(pid))
            await asyncio.sleep(SAMPLE_S)

    spawn = multiprocessing.get_context("spawn")
    go, done, out = spawn.Event(), spawn.Event(), spawn.Queue()
    timer = spawn.Process(target=pinger, args=(base_url, go, done, out, nice), daemon=True)
    timer.start()
    async with httpx.AsyncClient(base_url=base_url, timeout=120.0, limits=limits) as c:
        before = rss_mb(pid)
        idle: list[float] = await asyncio.to_thread(out.get, True, 120.0)  # GET / before anything runs
        tasks = [asyncio.create_task(sample())]
        started = time.monotonic()
        own0, dash0 = own_cpu_s(), cpu_s(pid)
        go.set()
        ids = []
        for body in bodies:
            r = await c.post("/api/v1/probes", json=body)
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        async with asyncio.timeout(RUN_DEADLINE_S):
            results = await asyncio.gather(*(follow(c, i) for i in ids for _ in range(viewers)))
        took = time.monotonic() - started
        own, dash = own_cpu_s() - own0, cpu_s(pid) - dash0
        done.set()
        latencies, timer_cpu = await asyncio.to_thread(out.get, True, 180.0)
        timer.join(10)
        await asyncio.sleep(1.0)  # what the memory settles to right after
        after = rss_mb(pid)
        stop.set()
        await asyncio.gather(*tasks)
        runs = [(await c.get(f"/api/v1/probes/{i}")).json() for i in ids]
    lat = sorted(latencies)
    idle_p50 = statistics.median(idle)
    p95 = lat[int(0.95 * (len(lat) - 1))]
    return {
        "rss_before_mb": round(before, 1),
        "rss_peak_mb": round(max(rss), 1),
        "rss_after_mb": round(after, 1),
        "rss_hwm_mb": round(rss_mb(pid, "VmHWM"), 1),
        "idle_get_root_p50_ms": round(idle_p50, 1),
        "get_root_p50_ms": round(statistics.median(lat), 1),
        "get_root_p95_ms": round(p95, 1),
        # The baseline of the same run: how much slower GET / got under the load than on the idle dashboard
        # (the machine's own load shows in both).
        "get_root_p95_x_idle_p50": round(p95 / idle_p50, 1),
        "get_root_max_ms": round(lat[-1], 1),
        "get_root_samples": len(lat),
        "seconds": round(took, 1),
        # Whose CPU the runs took, in % of one CPU: the dashboard's, the streams' client's and the GET /
        # timer's (a client near 100 % would be too slow to tell what the dashboard does).
        "dashboard_cpu_pct": round(dash / took * 100, 1),
        "viewers_client_cpu_pct": round(own / took * 100, 1),
        "get_root_client_cpu_pct": round(timer_cpu / took * 100, 1),
        "dashboard_nice": -nice,
        "load_average": " / ".join(f"{v:.1f}" for v in os.getloadavg()),
        "stream_kb_max": round(max(b for b, _ in results) / 1024, 1),
        "statuses": sorted({r["status"] for r in runs}),
        "done": [r["done"] for r in runs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--viewers", type=int, default=100)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra setting for the dashboard (repeatable), e.g. SVCSCOPE_SSE_COALESCE_S=0.5",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        metavar="N",
        help=(
            "run the dashboard and the GET / timer at niceness -N (root), so that a machine shared "
            "with other work measures the dashboard rather than the machine (the viewers' client "
            "keeps its priority)"
        ),
    )
    args = parser.parse_args()
    extra = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--env {item!r}: expected NAME=VALUE")
        extra[name] = value
    cluster = cluster_handle()
    namespace = f"bench-viewers-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    store = f"/tmp/svcscope-bench-{namespace}.db"
    dash = None
    try:
        app = deploy_echo_app(cluster, namespace, "web", replicas=3)
        dash = start_dashboard(
            env={
                "SVCSCOPE_STORE_PATH": store,
                "SVCSCOPE_NAMESPACES": namespace,
                "SVCSCOPE_PROBE_MAX_RUNS_ACTIVE": "8",
                # The default caps (64 streams, 32 per client) would refuse most of the viewers with 429: this
                # measures what the viewers cost, so every one of them (all from this one client) is let in.
                "SVCSCOPE_SSE_MAX_STREAMS": str(args.runs * args.viewers + 16),
                "SVCSCOPE_SSE_MAX_STREAMS_PER_CLIENT": str(args.runs * args.viewers + 16),
                **extra,
            }
        )
        body = probe_body(app, count=args.count, concurrency=args.concurrency)
        wait_serving(dash, probe_body(app, count=30, concurrency=3), pods=3)
        port = int(dash.base_url.rsplit(":", 1)[1])
        pid = dashboard_pid(port)
        if args.nice:
            raise_priority(pid, args.nice)
        numbers = asyncio.run(measure(dash.base_url, pid, [body] * args.runs, args.viewers, args.nice))
    finally:
        if dash is not None:
            dash.stop()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        for suffix in ("", "-wal", "-shm", ".lock"):
            Path(store + suffix).unlink(missing_ok=True)
    print(f"| runs x viewers | requests per run | {' | '.join(numbers)} |")
    print(f"| {args.runs} x {args.viewers} | {args.count} | {' | '.join(str(v) for v in numbers.values())} |")


if __name__ == "__main__":
    main()
