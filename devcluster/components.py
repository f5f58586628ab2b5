"""Stop, start and restart one component of a running cluster: `python -m devcluster stop|start|restart`.

A start makes sure the component's ports are really free first: the listeners are read from the node's own
/proc/net/tcp{,6} and traced to the processes holding those sockets, so a stray copy of the same program (one
an earlier fault left behind, which the PID file no longer names) is found and killed, and anything else on
the port is reported instead of started against. Then it waits until the component answers its health check.

No lock is taken (unlike `up`/`down`): an `up` that waits for the cluster to heal holds the lock while it
waits for exactly the component being started here.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from devcluster import cluster, config, kubeapi, node, paths, topology
from devcluster.sh import CommandError
from devcluster.topology import Node

# In start order. coredns is a Deployment: stopping it scales it to zero.
NAMES = (
    "etcd", "containerd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
    "kube-proxy", "coredns",
)  # fmt: skip
ON_FIRST_NODE = (*config.CONTROL_PLANE, "coredns")
# TCP ports each one listens on inside its node (containerd serves a unix socket; its CRI streaming port
# is chosen at random and not its to keep).
PORTS: dict[str, tuple[int, ...]] = {
    "etcd": (2379, 2380, 2381),
    "kube-apiserver": (paths.APISERVER_PORT,),
    "kube-controller-manager": (10257,),
    "kube-scheduler": (10259,),
    "kubelet": (10248, 10250),
    "kube-proxy": (10249, 10256),
    "containerd": (),
}
HEALTH_URLS: dict[str, tuple[str, ...]] = {
    "etcd": (f"{paths.ETCD_URL}/health",),
    "kube-controller-manager": ("https://127.0.0.1:10257/healthz",),
    "kube-scheduler": ("https://127.0.0.1:10259/healthz",),
    "kubelet": ("http://127.0.0.1:10248/healthz",),
    "kube-proxy": ("http://127.0.0.1:10256/healthz",),
}
STOP_GRACE_S = 5.0  # SIGTERM, then SIGKILL (the apiserver drains its watches for longer)
PORTS_FREE_S = 15.0
HEALTHY_S = 90.0
COREDNS_S = 90.0
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp

Log = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    base: str  # "kubelet"
    node: Node

    @property
    def name(self) -> str:
        """The PID-file and log name ("kubelet@svcscope-dc-2" on another node than the first)."""
        return self.base if self.base in ON_FIRST_NODE else self.node.component(self.base)


def resolve(base: str, node_name: str | None = None) -> Target:
    if base not in NAMES:
        raise cluster.ClusterError(f"{base!r}: give one of {', '.join(NAMES)}")
    each = cluster.find_node(node_name)
    if base in ON_FIRST_NODE and not each.first:
        first = topology.current().node_list()[0].name
        raise cluster.ClusterError(f"--node {node_name}: {base} runs beside the first node only ({first})")
    if not each.netns_path.exists():
        raise cluster.ClusterError(f"node {each.name} is not up: run `python -m devcluster up`")
    return Target(base, each)


# -- who listens on a port


def listening_inodes(table: str, ports: Collection[int]) -> dict[int, int]:
    """Socket inode -> port of every LISTEN socket on one of `ports`, from /proc/net/tcp or tcp6 text."""
    found: dict[int, int] = {}
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != _LISTEN:
            continue
        port = int(fields[1].rsplit(":", 1)[1], 16)
        if port in ports:
            found[int(fields[9])] = port
    return found


def _netns_id(netns_path: Path) -> str:
    return f"net:[{netns_path.stat().st_ino}]"


def _pids_in(netns: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "ns" / "net") == netns:
                    pids.append(int(entry.name))
    return pids


def listeners(netns_path: Path, ports: Collection[int]) -> dict[int, set[int]]:
    """Port -> PIDs holding a listening socket on it inside that network namespace (an empty set: a
    listener whose owner could not be seen). Only the ports someone listens on are keys."""
    if not ports:
        return {}
    pids = _pids_in(_netns_id(netns_path))
    inodes: dict[int, int] = {}
    for pid in pids:  # any process of the namespace shows its socket tables
        try:
            tables = [Path(f"/proc/{pid}/net/{kind}").read_text() for kind in ("tcp", "tcp6")]
        except OSError:
            continue
        for table in tables:
            inodes.update(listening_inodes(table, ports))
        break
    held: dict[int, set[int]] = {port: set() for port in inodes.values()}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:[") and (inode := int(link[8:-1])) in inodes:
                        held[inodes[inode]].add(pid)
    return held


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def program(base: str) -> str:
    """The name the kernel shows for the component's process (/proc/PID/comm keeps 15 bytes)."""
    return base[:15]


def free_ports(target: Target, log: Log = cluster.say) -> None:
    """Nothing may listen on the component's ports: a stray copy of the same program is killed; anything
    else is an error naming it (never killed)."""
    ports = PORTS.get(target.base, ())
    for port, pids in sorted(listeners(target.node.netns_path, ports).items()):
        for pid in sorted(pids):
            comm = _comm(pid)
            if comm and comm != program(target.base):
                raise cluster.ClusterError(
                    f"port {port} of {target.name} is held by pid {pid} ({comm}), not by {target.base}: "
                    "stop it first"
                )
            log(f"{target.name}: killing a stray {comm or 'process'} (pid {pid}) that holds port {port}")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + PORTS_FREE_S
    while held := listeners(target.node.netns_path, ports):
        if time.monotonic() > deadline:
            holders = "; ".join(f"port {p}: pids {sorted(pids) or '?'}" for p, pids in sorted(held.items()))
            raise cluster.ClusterError(f"{target.name}: ports taken after {PORTS_FREE_S:g} s ({holders})")
        time.sleep(0.05)  # polling the kernel's socket table, bounded by the deadline


# -- health


def _socket_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def healthy(target: Target) -> bool:
    if target.base == "kube-apiserver":
        return kubeapi.readyz()
    if target.base == "containerd":
        return _socket_answers(target.node.containerd_socket)
    if target.base == "coredns":
        return kubeapi.deployment_available("kube-system", "coredns")
    if not all(cluster.local_answers(target.node, HEALTH_URLS[target.base]).values()):
        return False
    return target.base != "kubelet" or kubeapi.node_ready(target.node.name)


# -- stop / start


def _wait_exit(rec: node.PidRecord, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while rec.alive():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)  # polling the process's exit, bounded by the deadline
    return True


def _scale_coredns(replicas: int) -> None:
    try:
        cluster.kubectl("scale", "deployment", "coredns", "-n", "kube-system", f"--replicas={replicas}")
    except CommandError as exc:
        raise cluster.ClusterError(f"coredns: {exc}") from None


def _coredns_pods() -> list[object]:
    pods = kubeapi.get_json("/api/v1/namespaces/kube-system/pods?labelSelector=k8s-app%3Dkube-dns")
    return list((pods or {}).get("items") or [])


def stop(base: str, node_name: str | None = None, *, kill: bool = False, freeze: bool = False,
         log: Log = cluster.say) -> None:  # fmt: skip
    """Stop a component: SIGTERM (SIGKILL after STOP_GRACE_S; at once with `kill`), then wait until its
    ports are free. `freeze`: SIGSTOP instead, so it keeps its ports and state and answers nothing."""
    target = resolve(base, node_name)
    if target.base == "coredns":
        if freeze:
            raise cluster.ClusterError("--freeze: coredns is a Deployment; stop scales it to zero")
        _scale_coredns(0)
        node.wait_for("no CoreDNS pod left", lambda: not _coredns_pods(), timeout=COREDNS_S, blame="kubelet")
        log("coredns: scaled to 0, no pod left")
        return
    rec = node.find_record(target.name)
    running = rec is not None and rec.alive()
    if freeze:
        if rec is None or not running:
            raise cluster.ClusterError(f"{target.name} is not running: nothing to freeze")
        os.kill(rec.pid, signal.SIGSTOP)
        node.wait_for(f"{target.name} stopped", lambda: rec.state() == "T", timeout=10, blame=target.name)
        log(f"{target.name}: frozen (pid {rec.pid}; `start` thaws it)")
        return
    if rec is not None and running:
        frozen = rec.state() == "T"
        started = time.monotonic()
        os.kill(rec.pid, signal.SIGKILL if kill else signal.SIGTERM)
        if frozen and not kill:
            os.kill(rec.pid, signal.SIGCONT)  # a stopped process acts on SIGTERM only once it runs
        if not _wait_exit(rec, STOP_GRACE_S):
            log(f"{target.name}: still running {STOP_GRACE_S:g} s after SIGTERM, killing it")
            os.kill(rec.pid, signal.SIGKILL)
            if not _wait_exit(rec, 5):
                raise cluster.ClusterError(f"{target.name} (pid {rec.pid}) would not die")
        how = "killed" if kill else "stopped"
        log(f"{target.name}: {how} (pid {rec.pid}) in {time.monotonic() - started:.1f} s")
    else:
        log(f"{target.name}: not running")
    free_ports(target, log)


def start(bases: Iterable[str], node_name: str | None = None, *, wait: bool = True,
          log: Log = cluster.say) -> None:  # fmt: skip
    """Start components (in start order) that do not run, thaw frozen ones, and wait until each is healthy
    (unless `wait` is false). A running, healthy one is left alone."""
    for target in sorted((resolve(b, node_name) for b in set(bases)), key=lambda t: NAMES.index(t.base)):
        started = time.monotonic()
        watch: Sequence[node.PidRecord] = ()
        if target.base == "coredns":
            _scale_coredns(1)
        else:
            watch = [_run(target, log)]
        if wait:
            node.wait_for(
                f"{target.name} healthy", functools.partial(healthy, target), timeout=HEALTHY_S,
                blame=target.name, watch=watch, interval=0.2,
            )  # fmt: skip
            log(f"{target.name}: healthy ({time.monotonic() - started:.1f} s)")


def _run(target: Target, log: Log) -> node.PidRecord:
    rec = node.find_record(target.name)
    if rec is not None and rec.alive():
        if rec.state() == "T":
            os.kill(rec.pid, signal.SIGCONT)
            log(f"{target.name}: thawed (pid {rec.pid})")
        else:
            log(f"{target.name}: already running (pid {rec.pid})")
        return rec
    free_ports(target, log)
    holder = node.find_record(target.node.component(node.HOLDER))
    if holder is None or not holder.alive():
        raise cluster.ClusterError(
            f"node {target.node.name} is not up (no mount-namespace holder): run `python -m devcluster up`"
        )
    spec = config.components(cluster.bin_dir())[target.name]
    rec = node.start(spec, holder)
    log(f"{target.name}: started (pid {rec.pid})")
    return rec


def restart(base: str, node_name: str | None = None, *, kill: bool = False, log: Log = cluster.say) -> None:
    stop(base, node_name, kill=kill, log=log)
    start([base], node_name, log=log)
