"""Benchmark: the catalog with 5,000 Services and 20,000 endpoints in the real devcluster apiserver.

    .venv/bin/python -m bench.catalog [--services 5000] [--endpoints-per-service 4] [--keep]

Creates Services without selectors plus one EndpointSlice each (bounded parallelism), labelled
``service.kubernetes.io/service-proxy-name: svcscope-bench`` so kube-proxy ignores them (no iptables
churn for other users of the shared node). Then, in the same run:

* ``kubectl get svc -A`` (the built kubectl, admin kubeconfig), median of 3;
* svcscope as a real uvicorn process: time from start to ``/readyz`` 200 (first lists synced);
* the first list page (``/``), the JSON list, and a search served from the cache: median and p95 of
  20 requests each (loopback HTTP, so this includes HTTP, rendering and the client);
* the app's RSS after sync and after the requests.

Prints a Markdown report (copy it into bench/catalog.md). Deletes its namespaces unless --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from kubernetes_asyncio import client as k8s

from app.kube.client import create_api_client
from devcluster import cluster as dc
from tests.netutil import free_port

REPO = Path(__file__).resolve().parent.parent
NAMESPACES = 10
UVICORN = [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--host", "127.0.0.1"]
UVICORN += ["--log-level", "warning", "--timeout-graceful-shutdown", "2"]
PROXY_LABEL = {"service.kubernetes.io/service-proxy-name": "svcscope-bench"}


def devcluster_env() -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "devcluster", "env"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    return dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines() if "=" in line)


def address(i: int, j: int, per: int) -> str:
    n = i * per + j
    return f"198.18.{1 + n // 250}.{1 + n % 250}"


async def create_objects(kubeconfig: str, services: int, per: int, concurrency: int = 16) -> float:
    api = await create_api_client(kubeconfig=kubeconfig, in_cluster=False)
    core, disc = k8s.CoreV1Api(api), k8s.DiscoveryV1Api(api)
    start = time.monotonic()
    try:
        for n in range(NAMESPACES):
            body: Any = {"metadata": {"name": f"bench-cat-{n}"}}
            try:
                await core.create_namespace(body=body)
            except k8s.ApiException as exc:
                if exc.status != 409:
                    raise
        sem = asyncio.Semaphore(concurrency)

        async def create(method: Any, ns: str, body: Any) -> None:
            for attempt in range(6):  # bounded retries: the shared apiserver may be busy
                try:
                    await method(ns, body=body)
                    return
                except k8s.ApiException as exc:
                    if exc.status == 409:
                        return
                    if attempt == 5:
                        raise
                except OSError:
                    if attempt == 5:
                        raise
                except Exception as exc:  # aiohttp ServerDisconnectedError and the like
                    if attempt == 5 or "Disconnected" not in type(exc).__name__:
                        raise
                await asyncio.sleep(0.5 * (attempt + 1))

        async def one(i: int) -> None:
            ns, name = f"bench-cat-{i % NAMESPACES}", f"svc-{i:05d}"
            svc: Any = {
                "metadata": {
                    "name": name,
                    "labels": {"bench": "catalog", "shard": str(i % 7), **PROXY_LABEL},
                },
                "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
            }
            eps: Any = {
                "metadata": {
                    "name": f"{name}-1",
                    "labels": {"kubernetes.io/service-name": name, **PROXY_LABEL},
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [
                    {"addresses": [address(i, j, per)], "conditions": {"ready": j != 0}, "nodeName": "bench"}
                    for j in range(per)
                ],
            }
            async with sem:
                await create(core.create_namespaced_service, ns, svc)
                await create(disc.create_namespaced_endpoint_slice, ns, eps)

        await asyncio.gather(*(one(i) for i in range(services)))
    finally:
        await api.close()
    return time.monotonic() - start


async def delete_objects(kubeconfig: str, services: int, concurrency: int = 16) -> float:
    """Delete what create_objects made, object by object (a namespace deletion would leave the
    controller-manager churning through 10,000 objects after the benchmark has let go of the node)."""
    api = await create_api_client(kubeconfig=kubeconfig, in_cluster=False)
    core, disc = k8s.CoreV1Api(api), k8s.DiscoveryV1Api(api)
    sem = asyncio.Semaphore(concurrency)
    start = time.monotonic()

    async def one(i: int) -> None:
        async with sem:
            try:
                await core.delete_namespaced_service(f"svc-{i:05d}", f"bench-cat-{i % NAMESPACES}")
            except k8s.ApiException as exc:
                if exc.status != 404:
                    raise

    try:
        await asyncio.gather(*(one(i) for i in range(services)))
        for n in range(NAMESPACES):
            ns = f"bench-cat-{n}"
            await disc.delete_collection_namespaced_endpoint_slice(ns)
            await core.delete_namespace(ns)
    finally:
        await api.close()
    return time.monotonic() - start


def timed(fn: Any, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"{statistics.median(values) * 1000:.1f} ms (p95 {p95 * 1000:.1f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=5000)
    parser.add_argument("--endpoints-per-service", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="leave the bench namespaces in place")
    args = parser.parse_args()
    env = devcluster_env()
    kubeconfig = env["KUBECONFIG"]
    kubectl = str(Path(env["PATH"].split(":", 1)[0]) / "kubectl")

    # The node is shared: hold devcluster's lock for the whole run, so that another session's
    # `devcluster up` cannot mistake a busy apiserver (its health probes time out after 2 s) for a
    # broken node and rebuild it under everyone. Their `up` waits instead.
    with dc._locked():
        run(args, kubeconfig, kubectl)


def run(args: argparse.Namespace, kubeconfig: str, kubectl: str) -> None:
    create_s = asyncio.run(create_objects(kubeconfig, args.services, args.endpoints_per_service))
    print(f"created {args.services} Services + EndpointSlices in {create_s:.1f} s", file=sys.stderr)

    def kubectl_get() -> None:
        subprocess.run(
            [kubectl, f"--kubeconfig={kubeconfig}", "get", "svc", "-A", "--no-headers"],
            capture_output=True,
            check=True,
        )

    kubectl_s = timed(kubectl_get, 3)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    proc = subprocess.Popen(
        [*UVICORN, "--port", str(port)],
        cwd=REPO,
        env={**os.environ, "SVCSCOPE_KUBECONFIG": kubeconfig, "SVCSCOPE_CSRF_SECRET": "bench"},
        stdin=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            deadline = time.monotonic() + 300
            while True:  # bounded by the deadline
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("svcscope did not become ready")
                time.sleep(0.05)
            sync_s = time.monotonic() - start
            rss_synced = rss_mb(proc.pid)
            total = http.get("/api/v1/services", params={"size": 1}).json()["total"]
            page = timed(lambda: http.get("/").raise_for_status(), 20)
            api = timed(lambda: http.get("/api/v1/services").raise_for_status(), 20)
            search = timed(lambda: http.get("/", params={"q": "svc-0421"}).raise_for_status(), 20)
            search_label = timed(
                lambda: http.get("/", params={"q": "shard=3 bench-cat-4"}).raise_for_status(), 20
            )
            detail = timed(lambda: http.get("/services/bench-cat-1/svc-00421").raise_for_status(), 20)
            rss_after = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(20)

    k = statistics.median(kubectl_s)
    endpoints = args.services * args.endpoints_per_service
    objects = f"{args.services} Services + EndpointSlices, {endpoints} endpoints in {NAMESPACES} namespaces"
    print(
        f"""
| what | result |
| --- | --- |
| objects | {objects}; app saw {total} Services |
| create (bench client, 16 in flight) | {create_s:.1f} s |
| `kubectl get svc -A` | {ms(kubectl_s)} |
| svcscope start → /readyz 200 (process start, list of all three resources) | {sync_s:.2f} s |
| first list page `/` (50 rows, HTML) | {ms(page)} — {statistics.median(page) / k:.3f}x kubectl |
| JSON `/api/v1/services` (50 rows) | {ms(api)} — {statistics.median(api) / k:.3f}x kubectl |
| search `?q=svc-0421` | {ms(search)} — {statistics.median(search) / k:.3f}x kubectl |
| search `?q=shard=3 bench-cat-4` (label + namespace) | {ms(search_label)} |
| detail page of one Service | {ms(detail)} |
| RSS after sync / after the requests | {rss_synced:.0f} MB / {rss_after:.0f} MB |
"""
    )
    if not args.keep:
        delete_s = asyncio.run(delete_objects(kubeconfig, args.services))
        print(f"deleted the benchmark objects in {delete_s:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
