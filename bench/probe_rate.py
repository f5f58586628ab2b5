"""Probe rate (new connection per request) vs `wrk -H 'Connection: close'`, and click-to-first-hit latency.

Not a test: a measurement on the real devcluster. Both the dashboard (its probe engine) and wrk run in
the node's network namespace against the same echo Service's ClusterIP at the same concurrency.

    .venv/bin/python -m bench.probe_rate [--replicas 3] [--count 5000] [--concurrency 1 8 32]

Prints a Markdown table (copied into bench/probe.md).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import Cluster, deploy_echo_app, devcluster
from tests.e2e.dashboard import Dashboard, start_dashboard, wait_serving


def cluster_handle() -> Cluster:
    devcluster("up", timeout=900)
    env = dict(
        line.removeprefix("export ").split("=", 1)
        for line in devcluster("env").stdout.splitlines()
        if "=" in line
    )
    return Cluster(kubeconfig=Path(env["KUBECONFIG"]), bin_dir=Path(env["PATH"].split(":", 1)[0]))


def wrk_rate(url: str, concurrency: int, seconds: int) -> float:
    threads = max(1, min(2, concurrency))
    proc = devcluster(
        "exec",
        "--",
        "wrk",
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{seconds}s",
        "-H",
        "Connection: close",
        url,
        timeout=seconds + 60,
    )
    m = re.search(r"Requests/sec:\s+([\d.]+)", proc.stdout)
    if not m:
        raise RuntimeError(f"no rate in wrk output:\n{proc.stdout}\n{proc.stderr}")
    return float(m.group(1))


def probe_rate(
    dash: Dashboard, namespace: str, service: str, count: int, concurrency: int
) -> tuple[float, dict[str, Any]]:
    run = dash.probe(
        timeout=600,
        namespace=namespace,
        service=service,
        port="http",
        count=count,
        concurrency=concurrency,
    )
    assert run["status"] == "done", run
    return run["done"] / run["elapsed_s"], run


def first_hit_ms(dash: Dashboard, namespace: str, service: str) -> float:
    """From sending the POST (the click) to the first strip cell arriving on the run's SSE stream."""
    with httpx.Client(base_url=dash.base_url, timeout=30) as c:
        t0 = time.monotonic()
        r = c.post(
            "/api/v1/probes", json={"namespace": namespace, "service": service, "port": "http", "count": 50}
        )
        run_id = r.json()["id"]
        with c.stream("GET", f"/runs/{run_id}/stream") as s:
            event = ""
            for line in s.iter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif event == "strip" and 'title="#' in line:
                    return (time.monotonic() - t0) * 1000.0
    raise RuntimeError("stream ended without a hit")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--wrk-seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="alternating probe/wrk rounds per point")
    args = parser.parse_args()

    cluster = cluster_handle()
    namespace = f"bench-probe-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", namespace)
    cluster.wait_for(
        lambda: (
            cluster.kubectl("get", "serviceaccount", "default", "-n", namespace, check=False).returncode == 0
        ),
        30,
        "default ServiceAccount",
    )
    dash = start_dashboard(port=18999)
    try:
        app = deploy_echo_app(cluster, namespace, "echo", replicas=args.replicas)
        dash.wait_endpoints(namespace, "echo", args.replicas)
        wait_serving(dash, {"namespace": namespace, "service": "echo", "port": "http"}, args.replicas)
        url = f"http://{app.cluster_ip}:80/"
        rows = []
        for c in args.concurrency:
            # Alternate the two clients and take medians: the machine is shared and noisy.
            rates: list[float] = []
            wrks: list[float] = []
            for _ in range(args.rounds):
                rate, run = probe_rate(dash, namespace, "echo", args.count, c)
                rates.append(rate)
                wrks.append(wrk_rate(url, c, args.wrk_seconds))
            rate, wrk = statistics.median(rates), statistics.median(wrks)
            rows.append((c, rate, wrk, rate / wrk, run["errors"], run["latency_ms"]))
        clicks = [first_hit_ms(dash, namespace, "echo") for _ in range(7)]
        print(
            f"\n{args.replicas} echo pods, {args.count} probes per run, wrk {args.wrk_seconds} s, median of "
            f"{args.rounds} alternating rounds per point; load average {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} CPUs\n"
        )
        print(
            "| concurrency | svcscope probes/s | wrk (Connection: close) req/s | ratio | errors | p50/p95 |"
        )
        print("|---:|---:|---:|---:|---|---|")
        for c, rate, wrk, ratio, errors, lat in rows:
            print(
                f"| {c} | {rate:.0f} | {wrk:.0f} | {ratio:.2f} | {errors or '-'} "
                f"| {lat['p50']}/{lat['p95']} |"
            )
        print(
            f"\nclick-to-first-hit (POST sent -> first strip cell on the SSE stream), 7 runs: "
            f"median {statistics.median(clicks):.0f} ms, min {min(clicks):.0f} ms, max {max(clicks):.0f} ms"
        )
    finally:
        dash.stop()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


if __name__ == "__main__":
    main()
