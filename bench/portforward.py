"""How long the demo's URL is gone after a fault, with the port-forward kept alive by the plugin's supervisor.

    python -m bench.portforward [--port 8080] [--rounds 3] [--fault pod|force|kill|apiserver]

Against a running `make demo` (or `python -m scripts.demo up`) on the instance SVCSCOPE_DC_INSTANCE names.
Each round deletes the dashboard pod (`pod`), force-deletes it (`force`), SIGKILLs its process from outside as
the OOM killer would (`kill`: the container restarts in the same pod), or SIGKILLs and restarts the apiserver
(`apiserver`), then polls
the URL every 0.1 s: when it first stops answering, and when it answers again (for `pod`: from a new process,
told by Prometheus' process_start_time_seconds). The baseline, measured in the same round, is what no
supervisor can beat: the (new) pod's Ready time (whole seconds), or the apiserver's /readyz.
Results: bench/portforward.md.
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import functools
import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence

from devcluster import kubeapi
from scripts import demo
from tests.e2e.dashboard import sigkill_dashboard

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
SELECTOR = "app.kubernetes.io/name=svcscope"
LIMIT_S = 180.0


def started_at(port: int) -> float | None:
    try:
        with _OPENER.open(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    match = re.search(r"^process_start_time_seconds (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def kubectl_json(*args: str) -> dict[str, object]:
    out = subprocess.run(
        [*demo.kubectl_base(), "--namespace", demo.NAMESPACE, *args, "-o", "json"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    data: dict[str, object] = json.loads(out)
    return data


def pods() -> list[dict[str, object]]:
    items = kubectl_json("get", "pods", "-l", SELECTOR)["items"]
    return [p for p in items if isinstance(p, dict)] if isinstance(items, list) else []


def _ready_at(pod: dict[str, object]) -> float | None:
    status = pod.get("status")
    conditions = status.get("conditions", []) if isinstance(status, dict) else []
    for cond in conditions:
        if cond.get("type") == "Ready" and cond.get("status") == "True":
            return float(calendar.timegm(time.strptime(cond["lastTransitionTime"], "%Y-%m-%dT%H:%M:%SZ")))
    return None


def round_pod(port: int, how: str = "pod") -> dict[str, float | None]:
    before = started_at(port)
    assert before is not None, f"nothing answers on port {port}: is the demo up?"
    (old,) = [str(p["metadata"]["name"]) for p in pods() if isinstance(p.get("metadata"), dict)]  # type: ignore[index]
    wall0 = time.time()
    if how == "kill":
        sigkill_dashboard(old)
    else:
        force = ["--force", "--grace-period=0"] if how == "force" else []
        subprocess.run(
            [*demo.kubectl_base(), "-n", demo.NAMESPACE, "delete", "pod", old, "--wait=false", *force],
            check=True,
            capture_output=True,
        )
    t0 = time.monotonic()
    miss = back = None
    while back is None and time.monotonic() - t0 < LIMIT_S:
        now = started_at(port)
        if now is None and miss is None:
            miss = time.monotonic() - t0
        elif now is not None and now != before:
            back = time.monotonic() - t0
        time.sleep(0.1)  # polling the URL, bounded by LIMIT_S
    ready = None
    deadline = time.monotonic() + LIMIT_S
    while ready is None and time.monotonic() < deadline:
        # After a kill the pod is the same one, Ready again once its restarted container is.
        new = [p for p in pods() if how == "kill" or p["metadata"]["name"] != old]  # type: ignore[index]
        at = _ready_at(new[0]) if len(new) == 1 else None
        ready = at if at is not None and at >= int(wall0) else None
        time.sleep(0.2)  # polling the pod's Ready condition, bounded by the deadline
    return {"miss": miss, "back": back, "baseline": None if ready is None else ready - wall0}


def round_apiserver(port: int) -> dict[str, float | None]:
    assert started_at(port) is not None, f"nothing answers on port {port}: is the demo up?"
    devcluster = [sys.executable, "-m", "devcluster"]
    subprocess.run([*devcluster, "stop", "kube-apiserver", "--kill"], check=True, timeout=120)
    t0 = time.monotonic()
    subprocess.run([*devcluster, "start", "kube-apiserver", "--no-wait"], check=True, timeout=120)
    miss = back = ready = None
    while back is None and time.monotonic() - t0 < LIMIT_S:
        if ready is None:
            with contextlib.suppress(OSError):
                ready = time.monotonic() - t0 if kubeapi.readyz() else None
        answers = started_at(port) is not None
        if not answers and miss is None:
            miss = time.monotonic() - t0
        elif answers and miss is not None:
            back = time.monotonic() - t0
        time.sleep(0.1)  # polling, bounded by LIMIT_S
    # The apiserver serves (port-forwards too) a moment before its /readyz says ready: keep asking.
    while ready is None and time.monotonic() - t0 < LIMIT_S:
        with contextlib.suppress(OSError):
            ready = time.monotonic() - t0 if kubeapi.readyz() else None
        time.sleep(0.1)  # polling, bounded by LIMIT_S
    return {"miss": miss, "back": back, "baseline": ready}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.portforward", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=demo.DEFAULT_PORT)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fault", choices=("pod", "force", "kill", "apiserver"), default="pod")
    args = parser.parse_args(argv)
    measure = round_apiserver if args.fault == "apiserver" else functools.partial(round_pod, how=args.fault)
    print("| round | first miss (s) | answers again (s) | baseline (s) | supervisor's lag (s) |")
    print("| --- | --- | --- | --- | --- |")
    for n in range(1, args.rounds + 1):
        r = measure(args.port)
        lag = None if r["back"] is None or r["baseline"] is None else r["back"] - r["baseline"]
        cells = [r["miss"], r["back"], r["baseline"], lag]
        print(f"| {n} | " + " | ".join("—" if c is None else f"{c:.1f}" for c in cells) + " |", flush=True)
        if n < args.rounds:  # the next fault on a settled dashboard
            deadline = time.monotonic() + LIMIT_S
            while started_at(args.port) is None and time.monotonic() < deadline:
                time.sleep(0.2)  # polling, bounded by the deadline
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
