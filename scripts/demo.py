"""`make demo` / `make demo-down`: svcscope with its demo workloads on the local cluster, port-forwarded.

    python -m scripts.demo up      # cluster up -> image -> helm upgrade --install -> Ready -> port-forward
    python -m scripts.demo down    # stop the port-forward, uninstall (and `--cluster`: stop the cluster too)

The cluster has 3 nodes in 3 zones (SVCSCOPE_DEMO_NODES / SVCSCOPE_DEMO_ZONES change that), so that the demo's
topology Services (Local policy, PreferSameNode, PreferSameZone, topology-mode Auto) make a difference. A
cluster that already runs in another shape is used as it is, with a note: others may be using it. The
cluster is the devcluster instance SVCSCOPE_DC_INSTANCE names; `make demo` sets it to "demo" unless given.
Both are idempotent. The image is built from the project's Dockerfile with buildah FROM the cluster's
debootstrapped base (no registry here) and imported into containerd; its Python dependencies come from a
wheelhouse downloaded on the host with pip, so the build itself needs no network. The e2e tests reuse
`build_image`, `helm_path` and `kubectl_base`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import os
import platform
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from app.plugin import supervise
from devcluster import install, paths, topology

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "helm" / "svcscope"
STATE_DIR = REPO / ".demo"  # gitignored: pidfile, log, stamps
PIDFILE = STATE_DIR / "port-forward.pid"
PF_LOG = STATE_DIR / "port-forward.log"
WHEELHOUSE = REPO / "build" / "wheelhouse"  # gitignored; the Dockerfile copies it when present
WHEELHOUSE_STAMP = WHEELHOUSE / ".requirements.sha256"

RELEASE = "svcscope"
NAMESPACE = "svcscope"
# Several checkouts share one local cluster: each can build and test its own tag (SVCSCOPE_IMAGE).
IMAGE = os.environ.get("SVCSCOPE_IMAGE", "localhost/svcscope:dev")
BASE_IMAGE = "localhost/svcscope-base:bookworm"
BASE_PYTHON = "3.11"  # Debian bookworm's python3, the interpreter of BASE_IMAGE: the wheels must fit it
DEFAULT_PORT = 8080  # SVCSCOPE_DEMO_PORT overrides

# 3 nodes in 3 zones: one echo pod per node and per zone, enough for topology-mode Auto to set hints. Measured
# on this kind of machine in bench/devcluster.md (the demo's time to Ready).
NODES_ENV = "SVCSCOPE_DEMO_NODES"
ZONES_ENV = "SVCSCOPE_DEMO_ZONES"
DEFAULT_NODES = 3
DEFAULT_ZONES = 3

READY_TIMEOUT_S = 240.0
PF_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0

Log = Callable[[str], None]


class DemoError(RuntimeError):
    pass


def _log(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def _run(args: Sequence[str], *, timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stderr + proc.stdout).strip().splitlines()[-20:])
        raise DemoError(f"`{' '.join(args[:4])} ...` failed ({proc.returncode}):\n{tail}")
    return proc


# -- Tools of the local cluster


def kubeconfig() -> Path:
    return paths.ADMIN_KUBECONFIG


def kubectl_base() -> list[str]:
    return [str(install.binary("kubectl")), "--kubeconfig", str(kubeconfig())]


def _kubectl(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run([*kubectl_base(), "--namespace", NAMESPACE, *args], timeout=timeout, check=check)


def helm_path() -> Path:
    return install.binary("helm")


def helm_base() -> list[str]:
    return [str(helm_path()), "--kubeconfig", str(kubeconfig())]


def _count(environ: Mapping[str, str], name: str, default: int) -> tuple[int, bool]:
    raw = environ.get(name, "").strip()
    if not raw:
        return default, False
    try:
        return int(raw), True
    except ValueError:
        raise DemoError(f"{name}={raw!r}: give a whole number") from None


def wanted_shape(environ: Mapping[str, str]) -> tuple[topology.Shape, bool]:
    """The demo cluster's shape from SVCSCOPE_DEMO_NODES/ZONES, and whether either was set."""
    nodes, nodes_set = _count(environ, NODES_ENV, DEFAULT_NODES)
    # Fewer nodes than the default zones: one zone per node.
    zones, zones_set = _count(environ, ZONES_ENV, min(DEFAULT_ZONES, max(nodes, 1)))
    try:
        shape = topology.Shape(nodes=nodes, zones=zones)
    except topology.ShapeError as exc:
        message = str(exc).replace("--nodes", NODES_ENV).replace("--zones", ZONES_ENV)
        raise DemoError(message) from None
    return shape, nodes_set or zones_set


def up_args(
    wanted: topology.Shape, explicit: bool, running: topology.Shape | None, log: Log = _log
) -> list[str]:
    """`devcluster` arguments for the demo's cluster. A running cluster of another shape is never torn down
    (other people's tests may be using it): without SVCSCOPE_DEMO_* it is used as it is, with them the
    demo stops and says how to get the shape asked for."""
    flags = ["--nodes", str(wanted.nodes), "--zones", str(wanted.zones)]
    if running is None or (running.nodes, running.zones) == (wanted.nodes, wanted.zones):
        return ["up", *flags]
    have = f"{running.nodes} node(s) in {running.zones} zone(s)"
    if explicit:
        raise DemoError(
            f"{NODES_ENV}={wanted.nodes} {ZONES_ENV}={wanted.zones}: the local cluster already runs {have}. "
            f"Stop it first with `make demo-down CLUSTER=1` (it stops everything running on it), use another "
            f"cluster beside it with {paths.INSTANCE_ENV}=NAME, or unset {NODES_ENV}/{ZONES_ENV} to use it "
            "as it is"
        )
    log(
        f"cluster: already running with {have}; the demo uses it as it is. The topology Services show "
        f"their rules on {wanted.nodes} nodes in {wanted.zones} zones: "
        f"`make demo-down CLUSTER=1 && make demo` (or {paths.INSTANCE_ENV}=NAME make demo beside it)"
    )
    return ["up"]


def cluster_up(log: Log = _log, environ: Mapping[str, str] | None = None) -> None:
    wanted, explicit = wanted_shape(os.environ if environ is None else environ)
    running = topology.recorded() if cluster_running() else None
    args = up_args(wanted, explicit, running, log)
    log(f"cluster: python -m devcluster {' '.join(args)} (a no-op when it runs)")
    proc = subprocess.run([sys.executable, "-m", "devcluster", *args], cwd=REPO, timeout=3600, check=False)
    if proc.returncode != 0:
        raise DemoError(f"`python -m devcluster {' '.join(args)}` failed (see above)")


def cluster_running() -> bool:
    proc = subprocess.run(
        [sys.executable, "-m", "devcluster", "status"], cwd=REPO, capture_output=True, timeout=60, check=False
    )
    return proc.returncode == 0


# -- The image


def _requirements() -> list[str]:
    with (REPO / "pyproject.toml").open("rb") as fh:
        deps = tomllib.load(fh)["project"]["dependencies"]
    return [str(d) for d in deps]


def _platform_tags() -> list[str]:
    """manylinux tags that Debian bookworm (glibc 2.36) runs."""
    arch = platform.machine()
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(36, 16, -1)]
    tags += [f"manylinux2014_{arch}", f"linux_{arch}"]
    return tags


def ensure_wheelhouse(log: Log = _log) -> Path:
    """Wheels of the runtime dependencies for BASE_PYTHON, downloaded with pip (PyPI), kept between runs."""
    reqs = _requirements()
    digest = hashlib.sha256("\n".join([BASE_PYTHON, platform.machine(), *reqs]).encode()).hexdigest()
    if WHEELHOUSE_STAMP.is_file() and WHEELHOUSE_STAMP.read_text().strip() == digest:
        return WHEELHOUSE
    log(f"wheelhouse: pip download for python {BASE_PYTHON} into {WHEELHOUSE.relative_to(REPO)}")
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    for old in WHEELHOUSE.glob("*.whl"):
        old.unlink()
    args = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(WHEELHOUSE)]
    args += ["--only-binary=:all:", "--implementation", "cp", "--python-version", BASE_PYTHON]
    for tag in _platform_tags():
        args += ["--platform", tag]
    _run([*args, *reqs], timeout=900)
    WHEELHOUSE_STAMP.write_text(digest + "\n")
    return WHEELHOUSE


def build_image(log: Log = _log) -> bool:
    """Build localhost/svcscope:dev from the Dockerfile and import it into every node's containerd (k8s.io).

    Both steps are cached by their inputs (devcluster.images); returns whether a new image was imported.
    """
    from devcluster import images  # buildah and ctr: only the demo and the e2e tests need them

    ensure_wheelhouse(log)
    started = time.monotonic()
    tarball = images.build_dockerfile(
        REPO,
        REPO / "Dockerfile",
        IMAGE,
        {"BASE_IMAGE": BASE_IMAGE, "PIP_INSTALL_ARGS": "--no-index"},
        log=log,
    )
    # Every node has its own containerd, and the pods may land on any of them. Two imports at a time, as
    # `devcluster up` does: unpacking is disk-bound, more at once only queue.
    sockets = [node.containerd_socket for node in topology.current().node_list()]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        done = pool.map(lambda socket: images.import_tarball(IMAGE, tarball, images.ctr_cmd(socket)), sockets)
        imported = any(list(done))
    size_mib = tarball.stat().st_size / 2**20
    state = "imported" if imported else "already in containerd"
    log(f"image: {IMAGE} {state} ({time.monotonic() - started:.1f} s, tarball {size_mib:.0f} MiB)")
    return imported


# -- The release


def release_installed() -> bool:
    proc = _run([*helm_base(), "status", RELEASE, "--namespace", NAMESPACE], timeout=60, check=False)
    return proc.returncode == 0


# The local demo shows everything: flipping sessionAffinity from the page and probing from a probe pod or from
# inside an existing pod. Each of these is off by default in the chart (it widens the dashboard's RBAC), and
# the writes are granted only in the demo's own namespace, where its echo Services live.
DEMO_FEATURES = (
    "rbac.patchServices=true",
    "rbac.probePods=true",
    "rbac.exec=true",
    f"rbac.writableNamespaces={{{NAMESPACE}}}",
)


def image_sets(image: str = IMAGE) -> list[str]:
    """Chart values for the image this checkout built and imported (SVCSCOPE_IMAGE or the default)."""
    repository, _, tag = image.rpartition(":")
    return [f"image.repository={repository}", f"image.tag={tag}"]


def install_release(log: Log = _log, *, restart: bool = False, extra_sets: Sequence[str] = ()) -> None:
    existed = release_installed()
    log(f"helm: upgrade --install {RELEASE} (namespace {NAMESPACE}, demo.enabled=true, image {IMAGE})")
    args = [*helm_base(), "upgrade", "--install", RELEASE, str(CHART), "--namespace", NAMESPACE]
    args += ["--create-namespace", "--reset-values", "--set", "demo.enabled=true"]
    for s in image_sets():
        args += ["--set", s]
    for s in extra_sets:
        args += ["--set", s]
    _run(args, timeout=180)
    if existed and restart:  # same tag, new image: the pods must be replaced to run it
        log("helm: image changed, restarting the deployments")
        _kubectl("rollout", "restart", "deployment", "--selector", "app.kubernetes.io/part-of=svcscope")


def wait_ready(log: Log = _log, *, timeout: float = READY_TIMEOUT_S) -> float:
    """Wait for the dashboard and echo deployments to roll out; returns the seconds waited."""
    started = time.monotonic()
    for deploy in (RELEASE, f"{RELEASE}-echo"):
        left = max(1.0, timeout - (time.monotonic() - started))
        wait = f"--timeout={int(left)}s"
        proc = _kubectl("rollout", "status", f"deployment/{deploy}", wait, timeout=left + 30, check=False)
        if proc.returncode != 0:
            pods = _kubectl("get", "pods", "-o", "wide", check=False).stdout
            raise DemoError(f"deployment/{deploy} did not become Ready:\n{proc.stderr.strip()}\n{pods}")
    waited = time.monotonic() - started
    log(f"ready: dashboard and echo pods Ready after {waited:.1f} s")
    return waited


def uninstall_release(log: Log = _log) -> None:
    if release_installed():
        log(f"helm: uninstall {RELEASE}")
        _run([*helm_base(), "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait"], timeout=180)
    proc = _run([*kubectl_base(), "get", "namespace", NAMESPACE], timeout=60, check=False)
    if proc.returncode == 0:
        log(f"kubectl: delete namespace {NAMESPACE}")
        _run([*kubectl_base(), "delete", "namespace", NAMESPACE, "--wait", "--timeout=120s"], timeout=180)


# -- The port-forward, kept alive by the kubectl plugin's supervisor (app.plugin) in the background


def _supervisor() -> int | None:
    """PID of the supervisor this script started, if it still runs (a recycled PID is not ours)."""
    try:
        pid = int(PIDFILE.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if b"app.plugin" in cmdline and RELEASE.encode() in cmdline else None


def stop_port_forward(log: Log = _log) -> None:
    pid = _supervisor()
    if pid is not None:
        log(f"port-forward: stopping its supervisor (pid {pid})")
        # The supervisor leads a session of its own: the signal reaches its kubectl too, even one it had no
        # time to stop itself.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _supervisor() is not None and time.monotonic() < deadline:
            time.sleep(0.1)  # polling the process's exit, bounded by the deadline
        if _supervisor() is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    PIDFILE.unlink(missing_ok=True)


def start_port_forward(port: int, log: Log = _log) -> str:
    """`kubectl port-forward svc/svcscope PORT:80` in the background, started again whenever it dies (the
    dashboard pod replaced, the apiserver restarted); returns the URL once it answers."""
    stop_port_forward(log)  # a forward holds on to one pod: after a rollout it must be renewed
    url = f"http://localhost:{port}/"
    if not supervise.port_free(port):
        raise DemoError(f"port {port} is already in use: set SVCSCOPE_DEMO_PORT")
    STATE_DIR.mkdir(exist_ok=True)
    args = [sys.executable, "-m", "app.plugin", "--kubectl", str(install.binary("kubectl"))]
    args += ["--kubeconfig", str(kubeconfig()), "--namespace", NAMESPACE, "--release", RELEASE]
    args += ["--port", str(port), "--timeout", str(PF_TIMEOUT_S)]
    with PF_LOG.open("w") as out:
        proc = subprocess.Popen(
            args,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    PIDFILE.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + PF_TIMEOUT_S + 5
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            PIDFILE.unlink(missing_ok=True)
            raise DemoError(f"the port-forward exited ({proc.returncode}):\n{PF_LOG.read_text()[-2000:]}")
        if supervise.check(port) is supervise.Answer.OK:
            log(f"port-forward: pid {proc.pid} keeps it alive, log {PF_LOG.relative_to(REPO)}")
            return url
        time.sleep(0.2)  # polling until the forward answers, bounded by the deadline
    stop_port_forward(log)
    tail = PF_LOG.read_text()[-2000:]
    raise DemoError(f"no answer through the port-forward in {PF_TIMEOUT_S:.0f} s:\n{tail}")


# -- Commands


def up(port: int) -> int:
    started = time.monotonic()
    cluster_up()
    rebuilt = build_image()
    install_started = time.monotonic()
    install_release(restart=rebuilt, extra_sets=DEMO_FEATURES)
    wait_ready()
    install_to_ready = time.monotonic() - install_started
    url = start_port_forward(port)
    _log(f"done in {time.monotonic() - started:.1f} s (helm install to Ready {install_to_ready:.1f} s)")
    print(f"svcscope is running: {url}")
    instance = f"--instance {paths.INSTANCE} " if paths.INSTANCE else ""
    print(f'its cluster: eval "$(.venv/bin/python -m devcluster {instance}env)"; kubectl get pods -A -o wide')
    print("stop it with: make demo-down   (and the cluster too: make demo-down CLUSTER=1)")
    return 0


def down(*, cluster: bool) -> int:
    stop_port_forward()
    if cluster_running():
        uninstall_release()
    else:
        _log("cluster: not running, nothing to uninstall")
    if cluster:
        _log("cluster: python -m devcluster down")
        subprocess.run([sys.executable, "-m", "devcluster", "down"], cwd=REPO, timeout=600, check=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.demo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="cluster, image, chart with the demo workloads, port-forward")
    down_parser = sub.add_parser("down", help="stop the port-forward and uninstall")
    down_parser.add_argument("--cluster", action="store_true", help="also stop the local cluster")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            return up(int(os.environ.get("SVCSCOPE_DEMO_PORT", DEFAULT_PORT)))
        return down(cluster=args.cluster)
    except (DemoError, install.InstallError) as exc:
        _log(f"error: {exc}")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
