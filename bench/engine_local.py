"""Probe engine throughput on loopback, no cluster: this tree vs a baseline git ref, as ratios.

Three echo backends (`python -m app.echo serve`, separate processes, 127.0.0.1 only) stand in for the pods;
the ProbeRunner's ``dial`` seam sends each worker's connections to one of them. Each measurement runs in
its own process with ``PYTHONPATH`` set to the tree under test, so "before" and "after" run the same
driver against the same backends; rounds alternate and the table shows medians.

    .venv/bin/python -m bench.engine_local [--baseline HEAD~3] [--count 3000] [--concurrency 1 8 32]
        [--rounds 5] [--loop asyncio|uvloop] [--baseline-loop asyncio|uvloop]

rate = probes / run time; cpu = the probing process's CPU time per probe (what the engine costs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PODS = 3


def _measure(concurrency: int, count: int, ports: list[int], loop: str) -> dict[str, float]:
    """One run in this process against the echo backends (the tree on PYTHONPATH is the one measured)."""
    try:
        from app.probe.runner import ProbeRunner
        from app.probe.spec import ProbeSpec
        from tests.unit.fakes import NS, limits, web_view

        bounds = limits()
    except ImportError:  # a baseline from before app/probe/engine.py was split
        from tests.unit.probe.fakes import NS, web_view  # type: ignore[import-not-found,no-redef]

        from app.probe.engine import Limits, ProbeRunner, ProbeSpec  # type: ignore[attr-defined,no-redef]

        bounds = Limits()

    pod_ports = {f"198.18.0.{10 + i}": port for i, port in enumerate(ports)}
    turn = iter(range(1_000_000))

    def dial(host: str, port: int) -> tuple[str, int]:
        if host in pod_ports:  # the calibration probes go to "the pod"
            return "127.0.0.1", pod_ports[host]
        return "127.0.0.1", ports[next(turn) % len(ports)]  # the ClusterIP: a backend per worker

    async def run() -> dict[str, float]:
        runner = ProbeRunner(web_view(PODS), bounds, dial=dial)
        cpu0 = time.process_time()
        r = runner.start(ProbeSpec(NS, "web", "http", count=count, concurrency=concurrency))
        assert r.task is not None
        await r.task
        cpu = time.process_time() - cpu0
        s = r.summary()
        if s.attributed != count:
            raise RuntimeError(f"{s.attributed}/{count} attributed: {s.errors} {s.unattributed_reasons}")
        return {"rate": count / r.elapsed_s, "cpu_us": cpu / count * 1e6}

    if loop == "uvloop":
        import uvloop

        return uvloop.run(run())
    return asyncio.run(run())


@contextlib.contextmanager
def echo_backends() -> Iterator[list[int]]:
    procs: list[subprocess.Popen[str]] = []
    try:
        ports = []
        for i in range(PODS):
            env = {
                **os.environ,
                "POD_NAME": f"web-{i}",
                "POD_IP": f"198.18.0.{10 + i}",
                "NODE_NAME": "node-1",
                "ECHO_BIND": "127.0.0.1",
                "ECHO_HTTP_PORT": "0",
                "ECHO_TCP_PORT": "0",
                "ECHO_UDP_PORT": "0",
            }
            argv = [sys.executable, "-m", "app.echo", "serve"]
            p = subprocess.Popen(argv, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
            procs.append(p)
            assert p.stderr is not None
            line = p.stderr.readline()  # "echo: pod=... http=:PORT ..." once it listens
            m = re.search(r"http=:(\d+)", line)
            if not m:
                raise RuntimeError(f"echo backend did not start: {line!r}")
            ports.append(int(m.group(1)))
        yield ports
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
            if p.stderr is not None:
                p.stderr.close()


@contextlib.contextmanager
def baseline_tree(ref: str | None) -> Iterator[Path | None]:
    if ref is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="svcscope-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), ref], cwd=REPO, check=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=False)


def measure_in(tree: Path, concurrency: int, count: int, ports: list[int], loop: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    argv = [sys.executable, str(Path(__file__).resolve()), "--measure", str(concurrency), str(count)]
    argv += ["--ports", *map(str, ports), "--loop", loop]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"measurement failed in {tree}:\n{out.stderr[-2000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", help="git ref to compare with (run from a temporary worktree)")
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--baseline-loop", choices=["asyncio", "uvloop"], help="default: --loop")
    parser.add_argument("--measure", type=int, nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--ports", type=int, nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(_measure(args.measure[0], args.measure[1], args.ports, args.loop)))
        return

    with baseline_tree(args.baseline) as base, echo_backends() as ports:
        base_loop = args.baseline_loop or args.loop
        trees = {
            f"this tree ({args.loop})": (REPO, args.loop),
            **({f"baseline {args.baseline} ({base_loop})": (base, base_loop)} if base else {}),
        }
        results: dict[tuple[str, int], list[dict[str, float]]] = {}
        for _ in range(args.rounds):
            for c in args.concurrency:
                for name, (tree, loop) in trees.items():  # alternate, so load drifts hit both alike
                    results.setdefault((name, c), []).append(measure_in(tree, c, args.count, ports, loop))
    print(
        f"\n{args.count} probes per run, {PODS} local echo backends, median of {args.rounds} "
        f"alternating rounds; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n"
    )
    print("| concurrency | tree | probes/s | CPU µs/probe | rate ratio | CPU ratio |")
    print("|---:|---|---:|---:|---:|---:|")
    for c in args.concurrency:
        ref_rate = ref_cpu = None
        for name in reversed(trees):  # the baseline first
            rates = [r["rate"] for r in results[(name, c)]]
            cpus = [r["cpu_us"] for r in results[(name, c)]]
            rate, cpu = statistics.median(rates), statistics.median(cpus)
            if ref_rate is None or ref_cpu is None:
                ref_rate, ref_cpu = rate, cpu
            print(
                f"| {c} | {name} | {rate:.0f} ({min(rates):.0f}-{max(rates):.0f}) | {cpu:.0f} "
                f"| {rate / ref_rate:.2f} | {cpu / ref_cpu:.2f} |"
            )


if __name__ == "__main__":
    main()
