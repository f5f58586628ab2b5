"""Time `devcluster up` from scratch and sum the RSS of the cluster's processes, for a few shapes.

    SVCSCOPE_DC_INSTANCE=bench python -m bench.devcluster_up --nodes 3 --zones 3 --proxy-mode nftables

Each run: `down`, `up` with the shape, then the timings `up` recorded (up-timings.json) and the RSS of every
process in the instance's cgroup tree, grouped by program. Run it on a named instance: it takes the instance
down first, so never point it at a cluster that others use.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from devcluster import paths


def _devcluster(*args: str, timeout: float) -> None:
    subprocess.run([sys.executable, "-m", "devcluster", *args], check=True, timeout=timeout)


def rss_by_program() -> dict[str, float]:
    """MiB of resident memory per program, over every process in the instance's cgroups (not the wrappers)."""
    root = paths.CGROUP_ROOT.strip("/")
    totals: dict[str, float] = collections.defaultdict(float)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            groups = (entry / "cgroup").read_text().splitlines()
            argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0].decode()
            status = (entry / "status").read_text().splitlines()
        except OSError:
            continue
        if not any(line.split(":", 2)[-1].lstrip("/").split("/", 1)[0] == root for line in groups):
            continue
        program = os.path.basename(argv0) or "?"
        if program in ("sh", "nsenter"):
            continue  # the start-up wrappers exec or wait; they are not the cluster
        kib = next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0)
        totals[program] += kib / 1024
    return dict(totals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--zones", type=int, default=1)
    parser.add_argument("--proxy-mode", default="iptables")
    parser.add_argument("--runs", type=int, default=1, help="how many down+up rounds (1-5)")
    args = parser.parse_args()
    if not paths.INSTANCE:
        parser.error(f"set {paths.INSTANCE_ENV} to a named instance: this takes the instance down first")
    if not 1 <= args.runs <= 5:
        parser.error("--runs: give 1 to 5")
    shape = ("--nodes", str(args.nodes), "--zones", str(args.zones), "--proxy-mode", args.proxy_mode)
    for run in range(1, args.runs + 1):
        _devcluster("down", timeout=300)
        started = time.monotonic()
        _devcluster("up", *shape, timeout=1800)
        wall = time.monotonic() - started
        timings = json.loads((paths.STATE_DIR / "up-timings.json").read_text())
        rss = rss_by_program()
        load = os.getloadavg()[0]
        print(
            json.dumps(
                {
                    "run": run,
                    "shape": " ".join(shape),
                    "load1": round(load, 1),
                    "wall_s": round(wall, 1),
                    "node_ready_s": timings["total-node-ready"],
                    "all_ready_s": timings["total"],
                    "rss_mib": round(sum(rss.values())),
                    "rss_by_program": {k: round(v) for k, v in sorted(rss.items(), key=lambda kv: -kv[1])},
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
