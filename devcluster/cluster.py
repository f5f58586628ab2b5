"""The cluster's life cycle: up, down, status. Every wait has a deadline; a failed `up` cleans up.

The control plane (etcd, apiserver, controller-manager, scheduler) runs in the first node's namespaces,
beside that node's containerd, kubelet and kube-proxy; that node is registered like any other (no
control-plane label or taint), so topology rules count it. Every further node runs its own three.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import shutil
import string
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from devcluster import config, hostlimits, kubeapi, net, node, paths, pki, topology
from devcluster.sh import CommandError, run
from devcluster.topology import Node, Shape

MANIFESTS_DIR = Path(__file__).with_name("manifests")
BIN_DIR_RECORD = paths.STATE_DIR / "bin-dir"
TIMINGS_FILE = paths.STATE_DIR / "up-timings.json"

# Start order. The control plane comes first; kubelet and kube-proxy once the apiserver answers.
CONTROL_PLANE = ("etcd", "containerd", "kube-apiserver")
NODE_AGENTS = ("kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")
ALL_COMPONENTS = (node.HOLDER, *CONTROL_PLANE, *NODE_AGENTS)  # base names, as `logs` takes them
PER_NODE = (node.HOLDER, *config.NODE_PROCESSES)


def component_names(shape: Shape) -> list[str]:
    """Every process of the cluster (PID-file names), in start order."""
    nodes = shape.node_list()
    names = [n.component(node.HOLDER) for n in nodes] + ["etcd"]
    names += [n.component("containerd") for n in nodes] + ["kube-apiserver", "kube-controller-manager"]
    names += ["kube-scheduler"] + [n.component("kubelet") for n in nodes]
    return names + [n.component("kube-proxy") for n in nodes]


class ClusterError(RuntimeError):
    """`up`, `down` or `status` could not do its job; the message says which part and why."""


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    # Several test sessions (and people) share the one node: up/down run one at a time.
    paths.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(paths.LOCK_FILE, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def say(message: str) -> None:
    print(f"devcluster: {message}", file=sys.stderr, flush=True)


# -- the tools built and installed by devcluster.install / devcluster.images


def ensure_installed() -> Path:
    """Debian packages and the cached Kubernetes binaries; returns the binary directory."""
    from devcluster import install

    install.ensure_packages()
    return Path(install.ensure_binaries())


def bin_dir() -> Path:
    """The binary directory of the running node, or the one `install` gives."""
    with contextlib.suppress(OSError):
        return Path(BIN_DIR_RECORD.read_text().strip())
    return ensure_installed()


def coredns_image() -> str:
    from devcluster import install

    return f"localhost/coredns:{install.COREDNS_VERSION}"


def coredns_tarball(binaries: Path) -> Path:
    """A one-file image of the static CoreDNS binary, written like the pause image (cached by its digest)."""
    from devcluster import images

    binary = (binaries / "coredns").read_bytes()
    target = images.IMAGE_CACHE / f"coredns-{hashlib.sha256(binary).hexdigest()[:16]}.tar"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        images.write_docker_archive(tmp, coredns_image(), {"coredns": (binary, 0o755)}, ["/coredns"])
        tmp.replace(target)
    return target


def _import_into(each: Node, wanted: Callable[[], dict[str, Path]]) -> None:
    from devcluster import images

    images.import_all(images.ctr_cmd(each.containerd_socket), images=wanted())


def import_images(binaries: Path, *, system: bool, into: Node | None = None) -> None:
    """Import into a node's containerd (`into`, default the first) what it runs: with `system`, pause
    (sandboxes) and CoreDNS; without, the tests' echo backend (the bulk: ~160 MB).

    The Python base is not imported: only buildah needs it, and importing it would slow down every `up`."""
    from devcluster import images

    if system:
        wanted = {images.PAUSE_IMAGE: images.build_pause(), coredns_image(): coredns_tarball(binaries)}
    else:
        wanted = {images.ECHO_IMAGE: images.build_echo()}
    images.import_all(images.ctr_cmd(into.containerd_socket) if into else None, images=wanted)


def _imported(done: Future[None], what: str) -> None:
    try:
        done.result(timeout=600)
    except Exception as exc:
        raise ClusterError(f"importing {what} failed: {exc}") from exc


# -- up


def kubectl(*args: str, check: bool = True, input_text: str | None = None, timeout: float = 60.0) -> str:
    proc = run(
        [str(bin_dir() / "kubectl"), f"--kubeconfig={paths.ADMIN_KUBECONFIG}", *args],
        check=check,
        input_text=input_text,
        timeout=timeout,
    )
    return proc.stdout


def render_manifest(name: str, **values: str) -> str:
    return string.Template((MANIFESTS_DIR / name).read_text()).substitute(values)


class ShapeMismatch(ClusterError):
    """`up` was asked for a shape other than the running cluster's."""


def _mismatch(wanted: Shape, running: Shape, asked: set[str]) -> str | None:
    flags = {
        "nodes": ("--nodes", wanted.nodes, running.nodes),
        "zones": ("--zones", wanted.zones, running.zones),
        "proxy_mode": ("--proxy-mode", wanted.proxy_mode, running.proxy_mode),
    }
    for key, (flag, want, have) in flags.items():
        if key in asked and want != have:
            return (
                f"{flag} {want}: the running cluster has {have} ({running.describe()}); "
                f"run `python -m devcluster down` first"
            )
    return None


def up(shape: Shape | None = None, *, asked: set[str] | None = None) -> dict[str, float]:
    """Bring the cluster up (a no-op if it is up, healthy and of the asked shape). Returns timings in seconds.

    `shape` is what to build; `asked` names the fields the user gave explicitly (the others may differ from
    a running cluster's, which is then kept as it is)."""
    shape = shape or Shape()
    asked = set(vars(shape)) if asked is None else asked
    if shape.proxy_mode == "nftables" and not shutil.which("nft", path="/usr/sbin:/sbin:/usr/bin:/bin"):
        raise ClusterError("--proxy-mode nftables needs `nft` (Debian package nftables): run `install` first")
    with _locked():
        running = topology.recorded()
        state = health()
        if running is not None and (problem := _mismatch(shape, running, asked)):
            if not state.problems or all(v.startswith("running") for v in state.components.values()):
                raise ShapeMismatch(problem)
        if not state.problems:
            say("already up")
            return {}
        if all(s.startswith("running") for s in state.components.values()):
            # Every process runs: never tear down a node others may be using over a passing problem.
            return _heal()
        if _leftovers():
            say("found a stopped or broken cluster: removing it first")
            _down_locked()
        binaries = ensure_installed()
        try:
            return _up(binaries, shape)
        except BaseException as exc:
            _keep_failed_logs()
            say(f"up failed, cleaning up (logs kept in {paths.FAILED_LOGS_DIR})")
            problems = _down_locked()
            if problems:
                say("clean-up left: " + "; ".join(problems))
            known = (
                CommandError,
                node.ComponentError,
                net.UnsafeRouteError,
                hostlimits.HostLimitError,
                ClusterError,
            )
            if isinstance(exc, known):
                raise ClusterError(str(exc)) from exc
            if isinstance(exc, Exception):
                raise ClusterError(f"{type(exc).__name__}: {exc}") from exc
            raise


def _up(binaries: Path, shape: Shape) -> dict[str, float]:
    t: dict[str, float] = {}
    began = time.monotonic()
    nodes = shape.node_list()
    for directory in (
        paths.STATE_DIR,
        paths.LOG_DIR,
        paths.PID_DIR,
        paths.ETCD_DATA_DIR,
        paths.VOLUME_PLUGIN_DIR,
    ):
        directory.mkdir(parents=True, exist_ok=True)
    for each in nodes:
        for directory in each.directories():
            directory.mkdir(parents=True, exist_ok=True)
    paths.ETCD_DATA_DIR.chmod(0o700)  # etcd refuses a data dir others can read
    BIN_DIR_RECORD.write_text(f"{binaries}\n")
    paths.SHAPE_FILE.write_text(shape.to_json())
    say(f"up: {shape.describe()}")
    for name, value in hostlimits.raise_floors().items():
        say(f"raised fs.inotify.{name} to {value} (several clusters' kubelets and kube-proxies share it)")
    with node.timed("pki+config", t):
        pki.generate(shape)
        config.write_all(shape)
    with node.timed("network", t):
        net.setup(shape)
        node.make_cgroups(n.cgroup_root for n in nodes)
    holders = {each.name: node.start_holder(None if each.first else each) for each in nodes}
    specs = config.components(binaries, shape)
    started = list(holders.values())

    def launch(name: str) -> None:
        spec = specs[name]
        owner = next(n for n in nodes if n.netns_path == spec.netns_path)
        started.append(node.start(spec, holders[owner.name]))

    launch("etcd")
    for each in nodes:
        launch(each.component("containerd"))
    launch("kube-apiserver")
    say("control plane started")
    # Two workers: the small system images first (every node), then the echo image, while the apiserver
    # starts. Each node has its own containerd and so its own copy of every image.
    with ThreadPoolExecutor(max_workers=min(2, len(nodes))) as pool:
        with node.timed("containerd", t):
            for each in nodes:
                node.wait_for(
                    f"containerd socket of {each.name}",
                    each.containerd_socket.exists,
                    timeout=15,
                    blame=each.component("containerd"),
                    watch=started,
                )
        from devcluster import images

        # The echo tarball is built (when its inputs changed) once, by the first task; the nodes' imports of
        # it wait for that one (never for each other, so two workers cannot deadlock).
        echo_tarball = pool.submit(images.build_echo)
        system = {images.PAUSE_IMAGE: images.build_pause(), coredns_image(): coredns_tarball(binaries)}
        system_images = [pool.submit(_import_into, each, lambda: system) for each in nodes]
        test_images = [
            pool.submit(_import_into, each, lambda: {images.ECHO_IMAGE: echo_tarball.result(timeout=1800)})
            for each in nodes
        ]
        with node.timed("apiserver-ready", t):
            node.wait_for(
                "apiserver /readyz", kubeapi.readyz, timeout=60, blame="kube-apiserver", watch=started
            )
        for name in ("kube-controller-manager", "kube-scheduler"):
            launch(name)
        for base in ("kubelet", "kube-proxy"):
            for each in nodes:
                launch(each.component(base))
        with node.timed("node-ready", t):
            for each in nodes:
                node.wait_for(
                    f"node {each.name} Ready",
                    functools.partial(kubeapi.node_ready, each.name),
                    timeout=60 + 15 * len(nodes),
                    blame=each.component("kubelet"),
                    watch=started,
                )
        t["total-node-ready"] = round(time.monotonic() - began, 2)
        with node.timed("system-images", t):
            for done in system_images:
                _imported(done, "the pause and CoreDNS images")
        kubectl("apply", "-f", "-", input_text=coredns_manifest())
        with node.timed("default-serviceaccount", t):
            node.wait_for(
                "default ServiceAccount",
                kubeapi.default_service_account,
                timeout=30,
                blame="kube-controller-manager",
                watch=started,
            )
        with node.timed("coredns", t):
            node.wait_for(
                "CoreDNS Deployment available",
                lambda: kubeapi.deployment_available("kube-system", "coredns"),
                timeout=90,
                blame="kubelet",
                watch=started,
            )
        with node.timed("echo-image", t):
            for done in test_images:
                _imported(done, "the echo image")
    net.check_routes(shape)  # again, now that the CNI bridges exist
    t["total"] = round(time.monotonic() - began, 2)
    TIMINGS_FILE.write_text(json.dumps(t, indent=2) + "\n")
    say(f"up: {len(nodes)} node(s) Ready after {t['total-node-ready']} s, all ready after {t['total']} s")
    return t


def _heal(timeout: float = 60.0) -> dict[str, float]:
    """All processes run but something is not healthy (yet): re-apply CoreDNS and wait for health."""
    say("node processes are running but unhealthy: waiting for them")
    with contextlib.suppress(CommandError):
        kubectl("apply", "-f", "-", input_text=coredns_manifest())
    deadline = time.monotonic() + timeout
    while (problems := health().problems) and time.monotonic() < deadline:
        time.sleep(0.5)
    if problems:
        raise ClusterError(
            "the node runs but is unhealthy: " + "; ".join(problems) + " (try `down`, then `up`)"
        )
    say("already up")
    return {}


def coredns_manifest() -> str:
    return render_manifest(
        "coredns.yaml",
        CLUSTER_DOMAIN=paths.CLUSTER_DOMAIN,
        DNS_SERVICE_IP=paths.DNS_SERVICE_IP,
        COREDNS_IMAGE=coredns_image(),
    )


def _keep_failed_logs() -> None:
    with contextlib.suppress(OSError):
        shutil.rmtree(paths.FAILED_LOGS_DIR, ignore_errors=True)
        if paths.LOG_DIR.is_dir():
            shutil.copytree(paths.LOG_DIR, paths.FAILED_LOGS_DIR)


def _leftovers() -> bool:
    """Is anything of a node there (running or not)?"""
    return (
        paths.STATE_DIR.exists()
        or any(pin.exists() for pin in topology.node_netns_paths())
        or Path("/sys/class/net", paths.HOST_IFACE).exists()
        or any((h / paths.CGROUP_ROOT.lstrip("/")).exists() for h in node.cgroup_hierarchies())
    )


# -- down


def down() -> list[str]:
    """Remove everything `up` made. Returns what could not be removed (empty: all gone)."""
    with _locked():
        return _down_locked()


def _down_locked() -> list[str]:
    if not _leftovers() and not node.read_records():
        return []
    t: dict[str, float] = {}
    pins = [pin for pin in topology.node_netns_paths() if pin.exists()]
    with node.timed("processes", t):
        problems = node.stop_all(netns_paths=pins)
    with node.timed("cgroups", t):
        problems += [f"cgroup {d} still busy" for d in node.remove_cgroups()]
    with node.timed("network", t):
        try:
            net.teardown(pins)
        except CommandError as exc:
            problems.append(str(exc))
    with node.timed("files", t):
        for point in reversed(node.mounts_below(paths.STATE_DIR)):
            run(["umount", "-l", point], check=False)
        if node.mounts_below(paths.STATE_DIR):
            problems.append(f"mounts left below {paths.STATE_DIR}; not deleting it")
        elif paths.STATE_DIR.exists():
            # --one-file-system: never descend into anything mounted below, whatever happened.
            run(["rm", "-rf", "--one-file-system", str(paths.STATE_DIR)], timeout=120)
        with contextlib.suppress(OSError):
            paths.NETNS_PATH.parent.rmdir()  # only if empty: other namespaces are not ours
    say(f"down: {sum(t.values()):.2f} s (" + ", ".join(f"{k} {v} s" for k, v in t.items()) + ")")
    return problems


# -- status


@dataclass
class Health:
    components: dict[str, str] = field(default_factory=dict)  # name -> "running (pid N)" / "not running"
    checks: dict[str, str] = field(default_factory=dict)  # name -> "ok" / reason
    problems: list[str] = field(default_factory=list)


def _check(health: Health, name: str, probe: Callable[[], bool]) -> bool:
    try:
        ok = probe()
        reason = "ok" if ok else "not ready"
    except Exception as exc:
        ok, reason = False, f"{type(exc).__name__}: {exc}"
    health.checks[name] = reason
    if not ok:
        health.problems.append(f"{name}: {reason}")
    return ok


def health() -> Health:
    result = Health()
    shape = topology.current()
    records = {rec.name: rec for rec in node.read_records()}
    names = component_names(shape)
    for name in names:
        rec = records.get(name)
        if rec and rec.alive():
            result.components[name] = f"running (pid {rec.pid})"
        else:
            result.components[name] = "not running"
            result.problems.append(f"{name}: not running")
    if result.problems and len(result.problems) == len(names):
        result.problems = ["not up"]
        return result
    nodes = shape.node_list()
    missing = [n.netns for n in nodes if not n.netns_path.exists()]
    for netns in missing:
        result.problems.append(f"netns {netns}: missing")
    if not missing:
        _check(result, "routes stay on the machine", lambda: not net.all_leaving_routes(shape))
        for each in nodes:
            for name, ok in _local_health(each).items():
                result.checks[name] = "ok" if ok else "no answer"
                if not ok:
                    result.problems.append(f"{name}: no answer")
    if _check(result, "apiserver /readyz", kubeapi.readyz):
        for each in nodes:
            _check(result, f"node {each.name} Ready", functools.partial(kubeapi.node_ready, each.name))
        _check(result, "CoreDNS available", lambda: kubeapi.deployment_available("kube-system", "coredns"))
    return result


# Health endpoints that listen on a node's loopback only (plain HTTP); etcd only on the first node's.
LOCAL_HEALTH = {
    "etcd /health": f"{paths.ETCD_URL}/health",
    "kubelet /healthz": "http://127.0.0.1:10248/healthz",
    "kube-proxy /healthz": "http://127.0.0.1:10256/healthz",
}
# Which of these URLs answer 200, asked from inside a node. The secure ports of the controller-manager and
# the scheduler serve self-signed certificates: the question is only whether the process answers.
_PROBE_SCRIPT = """\
import json, ssl, sys, urllib.request
unverified = ssl._create_unverified_context()
out = {}
for url in sys.argv[1:]:
    try:
        out[url] = urllib.request.urlopen(url, timeout=2, context=unverified).status == 200
    except Exception:
        out[url] = False
print(json.dumps(out))
"""


def local_answers(each: Node, urls: Iterable[str]) -> dict[str, bool]:
    """One Python inside a node's network namespace asks each URL (loopback-only endpoints): URL -> 200?"""
    wanted = list(urls)
    try:
        argv = ["nsenter", f"--net={each.netns_path}", "--", "python3", "-c", _PROBE_SCRIPT, *wanted]
        answers = json.loads(run(argv, timeout=15).stdout)
    except (CommandError, ValueError):
        answers = {}
    return {url: bool(answers.get(url)) for url in wanted}


def _local_health(each: Node | None = None) -> dict[str, bool]:
    """The node's loopback-only health endpoints (etcd's on the first node only): check name -> answers?"""
    each = each or topology.node(Shape(), 1)
    wanted = {
        (name if each.first else f"{name} ({each.name})"): url
        for name, url in LOCAL_HEALTH.items()
        if each.first or not name.startswith("etcd")
    }
    answers = local_answers(each, wanted.values())
    return {name: answers[url] for name, url in wanted.items()}


def env_lines() -> list[str]:
    return [f"export KUBECONFIG={paths.ADMIN_KUBECONFIG}", f"export PATH={bin_dir()}:$PATH"]


def find_node(name: str | None) -> Node:
    """A node of the running cluster by name (None: the first); the error names `--node`."""
    shape = topology.current()
    if name is None:
        return shape.node_list()[0]
    try:
        return topology.find_node(shape, name)
    except topology.ShapeError as exc:
        raise ClusterError(str(exc)) from exc


def exec_argv(command: list[str], node_name: str | None = None) -> list[str]:
    """argv that runs `command` inside a node (its network and mount namespaces); the first by default."""
    target = find_node(node_name)
    holder = node.find_record(target.component(node.HOLDER))
    if holder is None or not holder.alive():
        raise ClusterError(
            f"node {target.name} is not up (no mount-namespace holder): run `python -m devcluster up`"
        )
    return [*node.enter_prefix(holder, target.netns_path), *command]


def exec_env() -> dict[str, str]:
    env = dict(os.environ)
    env["KUBECONFIG"] = str(paths.ADMIN_KUBECONFIG)
    env["PATH"] = f"{bin_dir()}:{env.get('PATH', '/usr/bin:/bin')}"
    return env
