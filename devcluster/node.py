"""Process supervision for the node: one shared mount namespace, PID files, logs, cgroups, deadlines.

Every component runs as
    sh -c 'echo $$ > <pids cgroup>/cgroup.procs; exec "$@"' nsenter --mount=<holder> --net=<netns> -- BIN ...
so it lives in the node's network namespace, in ONE mount namespace shared by the whole tree (kubelet's volume
mounts must be visible to containerd and runc), and in our own pids cgroup (containerd's shims inherit it, so
`down` finds them too). PID files store the process start time, so a recycled PID is never signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from devcluster import paths
from devcluster.config import Component
from devcluster.sh import run
from devcluster.topology import Node

HOLDER = "mount-holder"
TAIL_LINES = 20
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class ComponentError(RuntimeError):
    """A component died or missed its deadline; the message names it and ends with its last log lines."""


@dataclass(frozen=True)
class PidRecord:
    name: str
    pid: int
    start_ticks: int  # field 22 of /proc/PID/stat: tells this process from a later one with the same PID

    def alive(self) -> bool:
        stat = _stat(self.pid)
        return stat is not None and stat[1] == self.start_ticks and stat[0] != "Z"

    def state(self) -> str | None:
        """The process's state letter (R, S, T for stopped by a signal, ...), or None when it is gone."""
        stat = _stat(self.pid)
        return stat[0] if stat is not None and stat[1] == self.start_ticks and stat[0] != "Z" else None


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in ticks) of a process, or None if there is none."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may contain spaces and parentheses
    return fields[0], int(fields[19])


def log_path(name: str) -> Path:
    return paths.LOG_DIR / f"{name}.log"


def log_tail(name: str, lines: int = TAIL_LINES) -> str:
    try:
        with log_path(name).open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def failure(name: str, problem: str) -> ComponentError:
    return ComponentError(
        f"{name}: {problem}\n--- last {TAIL_LINES} lines of {log_path(name)} ---\n{log_tail(name)}"
    )


# -- PID files


def _pid_file(name: str) -> Path:
    return paths.PID_DIR / f"{name}.pid"


def read_records() -> list[PidRecord]:
    """The PID files, in start order."""
    if not paths.PID_DIR.is_dir():
        return []
    records = []
    for path in paths.PID_DIR.glob("*.pid"):
        try:
            data = json.loads(path.read_text())
            records.append((data["seq"], PidRecord(path.stem, int(data["pid"]), int(data["start_ticks"]))))
        except (ValueError, KeyError, OSError):
            continue
    return [rec for _, rec in sorted(records, key=lambda item: item[0])]


def _write_record(record: PidRecord) -> None:
    paths.PID_DIR.mkdir(parents=True, exist_ok=True)
    seq = len(list(paths.PID_DIR.glob("*.pid")))
    _pid_file(record.name).write_text(
        json.dumps({"pid": record.pid, "start_ticks": record.start_ticks, "seq": seq})
    )


# -- cgroups


def cgroup_hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy (v1 controllers, the named systemd one and the unified v2 one)."""
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            if right.split(" ", 1)[0] in ("cgroup", "cgroup2"):
                found.append(Path(left.split()[4]))
    return found


def make_cgroups(roots: Iterable[str] = (paths.CGROUP_ROOT,)) -> None:
    """kubelet's cgroupRoot must exist in every hierarchy beforehand; cpuset needs cpus/mems filled in (at
    every level: a child cgroup starts empty)."""
    wanted_roots = sorted({paths.CGROUP_ROOT, *roots})
    for hierarchy in cgroup_hierarchies():
        for wanted in wanted_roots:
            parent = hierarchy
            for part in wanted.strip("/").split("/"):
                child = parent / part
                child.mkdir(exist_ok=True)
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    if (parent / knob).exists() and not (child / knob).read_text().strip():
                        (child / knob).write_text((parent / knob).read_text())
                parent = child
    pids = paths.CGROUP_FS / "pids"
    if pids.is_dir():
        (pids / paths.SYSTEM_CGROUP.lstrip("/")).mkdir(exist_ok=True)


def _system_procs_file() -> Path | None:
    procs = paths.CGROUP_FS / "pids" / paths.SYSTEM_CGROUP.lstrip("/") / "cgroup.procs"
    return procs if procs.exists() else None


def cgroup_pids() -> set[int]:
    """Every process in any cgroup below our root (pods, shims, components)."""
    found: set[int] = set()
    for hierarchy in cgroup_hierarchies():
        root = hierarchy / paths.CGROUP_ROOT.lstrip("/")
        # os.walk, not Path.rglob: kubelet removes pod cgroups while `down` walks them, and rglob raises
        # when a directory it listed is gone by the time it enters it; os.walk skips it.
        for directory, _, files in os.walk(root):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError):
                    found.update(int(p) for p in (Path(directory) / "cgroup.procs").read_text().split())
    return found


def remove_cgroups(deadline_s: float = 10.0) -> list[str]:
    """rmdir our cgroup trees, deepest first; returns the directories that would not go."""
    left: list[str] = []
    for hierarchy in cgroup_hierarchies():
        root = hierarchy / paths.CGROUP_ROOT.lstrip("/")
        if not root.is_dir():
            continue
        dirs = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        for directory in [*dirs, root]:
            if not _rmdir_until(directory, time.monotonic() + deadline_s):
                left.append(str(directory))
    return left


def _rmdir_until(directory: Path, deadline: float) -> bool:
    # A killed task can keep its cgroup busy for a moment after the signal.
    while True:
        try:
            directory.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


# -- starting


def _spawn(name: str, argv: list[str]) -> PidRecord:
    paths.LOG_DIR.mkdir(parents=True, exist_ok=True)
    procs = _system_procs_file()
    prefix = ["sh", "-c", f'echo $$ > {procs} && exec "$@"', name] if procs else []
    log_fd = os.open(log_path(name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    try:
        # posix_spawn, not Popen: the processes outlive `up`, and no Popen object should be left to warn about
        # a child that is still running. setsid: a Ctrl-C at the terminal does not reach the node.
        env = dict(os.environ)
        # kube-proxy runs iptables or nft, found on the PATH: make sure the sbin directories are on it.
        path = [*env.get("PATH", "").split(":"), "/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        env["PATH"] = ":".join(p for p in dict.fromkeys(path) if p)
        pid = os.posix_spawnp(
            (prefix or argv)[0],
            [*prefix, *argv],
            env,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, null_fd, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
            ],
            setsid=True,
        )
    finally:
        os.close(log_fd)
        os.close(null_fd)
    stat = _stat(pid)
    record = PidRecord(name, pid, stat[1] if stat else 0)
    _write_record(record)
    return record


def holder_mntns(holder: PidRecord) -> str:
    return f"/proc/{holder.pid}/ns/mnt"


def enter_prefix(holder: PidRecord, netns_path: Path = paths.NETNS_PATH) -> list[str]:
    """Prefix that runs a command in a node's network namespace and its shared mount namespace."""
    return ["nsenter", f"--mount={holder_mntns(holder)}", f"--net={netns_path}", "--"]


def holder_name(node: Node | None = None) -> str:
    return HOLDER if node is None else node.component(HOLDER)


def start_holder(node: Node | None = None) -> PidRecord:
    """Start the process that owns a node's mount namespace, then build that namespace's view of the disk.

    Each node has its own (kubelet, libcni and containerd write to the same hard-coded paths on every node).

    Inside it (propagation slave: nothing mounted there reaches the host):
      * /etc, /var and /usr/libexec become overlays whose upper layers live on a tmpfs, because kubelet,
        libcni and the controller-manager write to hard-coded paths there whatever their configuration says;
      * the real state directory is bound back over its place in the /var overlay, so etcd, containerd and the
        logs write to disk, visible from the host;
      * /run is the state directory's run/ (containerd's shim sockets, pod network namespaces, xtables lock).
    """
    netns_path = node.netns_path if node else paths.NETNS_PATH
    run_dir = node.run_dir if node else paths.NS_RUN_DIR
    holder = _spawn(
        holder_name(node),
        [
            "nsenter",
            f"--net={netns_path}",
            "--",
            "unshare",
            "--mount",
            "--propagation",
            "slave",
            "--",
            "sleep",
            "infinity",
        ],
    )
    deadline = time.monotonic() + 5
    # unshare execs sleep in the new namespace: wait until the PID's mount namespace is no longer ours.
    while os.readlink(f"/proc/{holder.pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt") or not _is_sleep(
        holder
    ):
        if not holder.alive() or time.monotonic() > deadline:
            raise failure(holder.name, "the mount-namespace holder did not start")
        time.sleep(0.01)
    run_dir.mkdir(parents=True, exist_ok=True)
    run(["nsenter", f"--mount={holder_mntns(holder)}", "--", "sh", "-c", mount_script(run_dir)])
    return holder


def _is_sleep(holder: PidRecord) -> bool:
    try:
        return Path(f"/proc/{holder.pid}/comm").read_text().strip() == "sleep"
    except OSError:
        return False


def mount_script(run_dir: Path = paths.NS_RUN_DIR) -> str:
    stage = paths.NS_STAGING_MOUNTPOINT
    lines = [
        "set -e",
        f"mount -t tmpfs -o mode=0755 svcscope-dc-stage {stage}",
        f"mkdir -p {stage}/state",
        f"mount --bind {paths.STATE_DIR} {stage}/state",
    ]
    for tree in ("/etc", "/var", "/usr/libexec"):
        layer = f"{stage}/overlay/{tree.strip('/').replace('/', '-')}"
        lines += [
            f"mkdir -p {layer}/upper {layer}/work",
            f"mount -t overlay svcscope-dc-overlay -o lowerdir={tree},upperdir={layer}/upper,"
            f"workdir={layer}/work {tree}",
        ]
    lines += [f"mount --bind {stage}/state {paths.STATE_DIR}", f"mount --bind {run_dir} /run"]
    return "\n".join(lines)


def start(component: Component, holder: PidRecord) -> PidRecord:
    """Start a component in its node's namespaces (`holder`: that node's mount-namespace holder)."""
    return _spawn(component.name, [*enter_prefix(holder, component.netns_path), *component.argv])


def find_record(name: str) -> PidRecord | None:
    return next((rec for rec in read_records() if rec.name == name), None)


# -- waiting


def wait_for(
    what: str,
    ready: Callable[[], bool],
    *,
    timeout: float,
    blame: str,
    watch: Iterable[PidRecord] = (),
    interval: float = 0.05,
) -> float:
    """Poll `ready` until it holds; fail early if a watched component dies. Returns the seconds waited."""
    start = time.monotonic()
    deadline = start + timeout
    watched = list(watch)
    while True:
        for rec in watched:
            if not rec.alive():
                raise failure(rec.name, f"exited while waiting for {what}")
        with contextlib.suppress(Exception):
            if ready():
                return time.monotonic() - start
        if time.monotonic() > deadline:
            raise failure(blame, f"{what} not reached within {timeout:g} s")
        time.sleep(interval)


# -- stopping


def processes_in_namespaces(
    netns_paths: Path | Iterable[Path], mntns: str | Iterable[str] | None
) -> set[int]:
    """PIDs whose network namespace is one of the nodes' (or whose mount namespace is a holder's)."""
    targets: set[str] = set()
    for netns_path in [netns_paths] if isinstance(netns_paths, Path) else netns_paths:
        with contextlib.suppress(OSError):
            st = netns_path.stat()
            targets.add(f"net:[{st.st_ino}]")
    if isinstance(mntns, str):
        targets.add(mntns)
    elif mntns is not None:
        targets.update(mntns)
    me = os.getpid()
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        for kind in ("net", "mnt"):
            with contextlib.suppress(OSError):
                if os.readlink(entry / "ns" / kind) in targets:
                    found.add(int(entry.name))
    return found


def _signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _reap() -> None:
    # Processes started by this very process (an `up` that failed) are our children: collect them.
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def _wait_gone(pids: set[int], deadline: float) -> set[int]:
    while True:
        _reap()
        left = {pid for pid in pids if (st := _stat(pid)) is not None and st[0] != "Z"}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def stop_all(deadline_s: float = 10.0, netns_paths: Iterable[Path] = (paths.NETNS_PATH,)) -> list[str]:
    """Kill everything the node started. Returns the problems that remain (empty when all is gone).

    SIGKILL, no grace: `down` deletes all state right after, so there is nothing to flush (and graceful
    stops of the apiserver and kubelet take seconds). What dies: the PIDs in our PID files, every process in
    our cgroups (containers, shims, `kubectl exec` sessions), and any process left in the node's namespaces.
    Repeated until none is left, because a dying parent may still have forked."""
    records = read_records()
    mntns: list[str] = []
    for holder in records:
        if holder.name.split("@", 1)[0] == HOLDER and holder.alive():
            with contextlib.suppress(OSError):
                mntns.append(os.readlink(holder_mntns(holder)))
    spaces = list(netns_paths)
    pids = {rec.pid for rec in records if rec.alive()}
    deadline = time.monotonic() + deadline_s
    while True:
        pids |= cgroup_pids() | processes_in_namespaces(spaces, mntns)
        _signal_all(pids, signal.SIGKILL)
        pids = _wait_gone(pids, time.monotonic() + 0.5)
        if not (pids | cgroup_pids() | processes_in_namespaces(spaces, mntns)):
            break
        if time.monotonic() > deadline:
            return [f"process {pid} would not die" for pid in sorted(pids)]
    for rec in records:
        _pid_file(rec.name).unlink(missing_ok=True)
    return []


def mounts_below(prefix: Path) -> list[str]:
    """Mount points (in this mount namespace) at or below `prefix`."""
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            point = line.split()[4].replace("\\040", " ")
            if point == str(prefix) or point.startswith(str(prefix) + "/"):
                found.append(point)
    return found


@contextlib.contextmanager
def timed(label: str, sink: dict[str, float]) -> Iterator[None]:
    start = time.monotonic()
    try:
        yield
    finally:
        sink[label] = round(time.monotonic() - start, 2)
