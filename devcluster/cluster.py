"""The node's life cycle: up, down, status. Every wait has a deadline; a failed `up` cleans up."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import string
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from devcluster import config, kubeapi, net, node, paths, pki
from devcluster.sh import CommandError, in_netns, run

MANIFESTS_DIR = Path(__file__).with_name("manifests")
BIN_DIR_RECORD = paths.STATE_DIR / "bin-dir"
TIMINGS_FILE = paths.STATE_DIR / "up-timings.json"

# Start order. The control plane comes first; kubelet and kube-proxy once the apiserver answers.
CONTROL_PLANE = ("etcd", "containerd", "kube-apiserver")
NODE_AGENTS = ("kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")
ALL_COMPONENTS = (node.HOLDER, *CONTROL_PLANE, *NODE_AGENTS)


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


# -- the tools built and installed by devcluster.install / devcluster.images (helper H1)


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
    """A one-file image of the static CoreDNS binary, written like H1's pause image (cached by its digest)."""
    from devcluster import images

    binary = (binaries / "coredns").read_bytes()
    target = images.IMAGE_CACHE / f"coredns-{hashlib.sha256(binary).hexdigest()[:16]}.tar"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        images.write_docker_archive(tmp, coredns_image(), {"coredns": (binary, 0o755)}, ["/coredns"])
        tmp.replace(target)
    return target


def import_images(binaries: Path, *, system: bool) -> None:
    """Import into the node's containerd what it runs: with `system`, pause (sandboxes) and CoreDNS; without,
    the tests' echo backend (the bulk: ~160 MB).

    The Python base is not imported: only buildah needs it, and importing it would slow down every `up`."""
    from devcluster import images

    if system:
        wanted = {images.PAUSE_IMAGE: images.build_pause(), coredns_image(): coredns_tarball(binaries)}
    else:
        wanted = {images.ECHO_IMAGE: images.build_echo()}
    images.import_all(images=wanted)


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


def up() -> dict[str, float]:
    """Bring the node up (a no-op if it is up and healthy). Returns timings in seconds."""
    with _locked():
        state = health()
        if not state.problems:
            say("already up")
            return {}
        if all(s.startswith("running") for s in state.components.values()):
            # Every process runs: never tear down a node others may be using over a passing problem.
            return _heal()
        if _leftovers():
            say("found a stopped or broken node: removing it first")
            _down_locked()
        binaries = ensure_installed()
        try:
            return _up(binaries)
        except BaseException as exc:
            _keep_failed_logs()
            say(f"up failed, cleaning up (logs kept in {paths.FAILED_LOGS_DIR})")
            problems = _down_locked()
            if problems:
                say("clean-up left: " + "; ".join(problems))
            if isinstance(exc, (CommandError, node.ComponentError, net.UnsafeRouteError, ClusterError)):
                raise ClusterError(str(exc)) from exc
            if isinstance(exc, Exception):
                raise ClusterError(f"{type(exc).__name__}: {exc}") from exc
            raise


def _up(binaries: Path) -> dict[str, float]:
    t: dict[str, float] = {}
    start = time.monotonic()
    for directory in (
        paths.STATE_DIR,
        paths.LOG_DIR,
        paths.PID_DIR,
        paths.ETCD_DATA_DIR,
        paths.KUBELET_ROOT_DIR,
        paths.POD_LOGS_DIR,
        paths.CONTAINERD_ROOT,
        paths.NS_RUN_DIR,
        paths.VOLUME_PLUGIN_DIR,
    ):
        directory.mkdir(parents=True, exist_ok=True)
    paths.ETCD_DATA_DIR.chmod(0o700)  # etcd refuses a data dir others can read
    BIN_DIR_RECORD.write_text(f"{binaries}\n")
    with node.timed("pki+config", t):
        pki.generate()
        config.write_all()
    with node.timed("network", t):
        net.setup()
        node.make_cgroups()
    holder = node.start_holder()
    specs = config.components(binaries)
    started = [holder]
    for name in CONTROL_PLANE:
        started.append(node.start(specs[name], holder))
    say("control plane started")
    # One worker: the small system images first, then the echo image, all while the apiserver starts.
    with ThreadPoolExecutor(max_workers=1) as pool:
        with node.timed("containerd", t):
            node.wait_for(
                "containerd socket",
                paths.CONTAINERD_SOCKET.exists,
                timeout=15,
                blame="containerd",
                watch=started,
            )
        system_images = pool.submit(import_images, binaries, system=True)
        test_images = pool.submit(import_images, binaries, system=False)
        with node.timed("apiserver-ready", t):
            node.wait_for(
                "apiserver /readyz", kubeapi.readyz, timeout=60, blame="kube-apiserver", watch=started
            )
        for name in NODE_AGENTS:
            started.append(node.start(specs[name], holder))
        with node.timed("node-ready", t):
            node.wait_for("node Ready", kubeapi.node_ready, timeout=60, blame="kubelet", watch=started)
        t["total-node-ready"] = round(time.monotonic() - start, 2)
        with node.timed("system-images", t):
            _imported(system_images, "the pause and CoreDNS images")
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
            _imported(test_images, "the echo image")
    net.check_routes()  # again, now that the CNI bridge exists
    t["total"] = round(time.monotonic() - start, 2)
    TIMINGS_FILE.write_text(json.dumps(t, indent=2) + "\n")
    say(f"up: node Ready after {t['total-node-ready']} s, all ready after {t['total']} s")
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
        or paths.NETNS_PATH.exists()
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
    with node.timed("processes", t):
        problems = node.stop_all()
    with node.timed("cgroups", t):
        problems += [f"cgroup {d} still busy" for d in node.remove_cgroups()]
    with node.timed("network", t):
        try:
            net.teardown()
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
    records = {rec.name: rec for rec in node.read_records()}
    for name in ALL_COMPONENTS:
        rec = records.get(name)
        if rec and rec.alive():
            result.components[name] = f"running (pid {rec.pid})"
        else:
            result.components[name] = "not running"
            result.problems.append(f"{name}: not running")
    if result.problems and len(result.problems) == len(ALL_COMPONENTS):
        result.problems = ["not up"]
        return result
    if not paths.NETNS_PATH.exists():
        result.problems.append(f"netns {paths.NETNS}: missing")
    else:
        _check(result, "routes stay on the machine", lambda: not net.leaving_routes(net.routes()))
        for name, ok in _local_health().items():
            result.checks[name] = "ok" if ok else "no answer"
            if not ok:
                result.problems.append(f"{name}: no answer")
    if _check(result, "apiserver /readyz", kubeapi.readyz):
        _check(result, "node Ready", kubeapi.node_ready)
        _check(result, "CoreDNS available", lambda: kubeapi.deployment_available("kube-system", "coredns"))
    return result


# Health endpoints that listen on the namespace's loopback only (plain HTTP).
LOCAL_HEALTH = {
    "etcd /health": f"{paths.ETCD_URL}/health",
    "kubelet /healthz": "http://127.0.0.1:10248/healthz",
    "kube-proxy /healthz": "http://127.0.0.1:10256/healthz",
}
_PROBE_SCRIPT = """\
import json, sys, urllib.request
out = {}
for url in sys.argv[1:]:
    try:
        out[url] = urllib.request.urlopen(url, timeout=2).status == 200
    except Exception:
        out[url] = False
print(json.dumps(out))
"""


def _local_health() -> dict[str, bool]:
    """One Python inside the node's network namespace checks every loopback-only health endpoint."""
    try:
        proc = run(in_netns(["python3", "-c", _PROBE_SCRIPT, *LOCAL_HEALTH.values()]), timeout=15)
        answers = json.loads(proc.stdout)
    except (CommandError, ValueError):
        answers = {}
    return {name: bool(answers.get(url)) for name, url in LOCAL_HEALTH.items()}


def env_lines() -> list[str]:
    return [f"export KUBECONFIG={paths.ADMIN_KUBECONFIG}", f"export PATH={bin_dir()}:$PATH"]


def exec_argv(command: list[str]) -> list[str]:
    """argv that runs `command` inside the node (its network and mount namespaces)."""
    holder = node.find_record(node.HOLDER)
    if holder is None or not holder.alive():
        raise ClusterError("the node is not up (no mount-namespace holder): run `python -m devcluster up`")
    return [*node.enter_prefix(holder), *command]


def exec_env() -> dict[str, str]:
    env = dict(os.environ)
    env["KUBECONFIG"] = str(paths.ADMIN_KUBECONFIG)
    env["PATH"] = f"{bin_dir()}:{env.get('PATH', '/usr/bin:/bin')}"
    return env
