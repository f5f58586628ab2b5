"""Install what the devcluster needs on a fresh machine, idempotently: Debian packages and the binaries.

The Kubernetes binaries are built from upstream Go sources through the Go module proxy, pinned in
devcluster/go.mod (k8s.io/kubernetes plus `replace` lines for its staging modules). CoreDNS and helm are
pinned here by module version and built with `go install MODULE@VERSION`, i.e. against their *own* go.mod
and go.sum: putting them into our go.mod would make Go's minimal version selection move the Kubernetes
dependency graph (grpc, otel, etcd client ...) away from what upstream tested, and CoreDNS onto a client-go
it was not released with. The Go checksum database verifies all three.

Built binaries live in /var/cache/svcscope-devcluster/bin/<key>/, <key> naming every pin and the Go
version, so a warm machine builds nothing and a version bump never mixes old and new binaries.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from devcluster import paths

KUBE_VERSION = "v1.36.3"  # k8s.io/kubernetes; its staging modules are replaced by v0.36.3 in go.mod
COREDNS_MODULE = "github.com/coredns/coredns"
COREDNS_VERSION = "v1.14.7"  # built with its own go.mod (k8s.io/client-go v0.35.4)
HELM_MODULE = "helm.sh/helm/v3"
HELM_VERSION = "v3.21.4"  # built with its own go.mod (k8s.io/client-go v0.36.2)

GO_MODULE_DIR = Path(__file__).resolve().parent  # holds go.mod / go.sum
BIN_CACHE = paths.CACHE_DIR / "bin"

KUBE_BINARIES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
)
BINARIES = (*KUBE_BINARIES, "coredns", "helm")

# Debian packages (bookworm): the container runtime, etcd, networking tools and the image builders.
APT_PACKAGES = (
    "containerd",
    "runc",
    "containernetworking-plugins",
    "etcd-server",
    "iptables",
    "nftables",  # kube-proxy's nftables mode runs Debian's `nft` inside the node namespaces
    "conntrack",
    "iproute2",
    "busybox-static",
    "buildah",
    "debootstrap",
    "openssl",
    "util-linux",
    "kmod",
    "socat",
    "ca-certificates",
    "chromium",  # tests/e2e/test_browser.py (issue 5): Debian's Chromium, driven by Playwright; no download
)
# Debian would start these on the host; the devcluster runs its own copies inside the node namespace.
HOST_SERVICES = ("containerd", "etcd")

# Go >= 1.27 enables the jsonv2 experiment by default, which breaks kube-openapi serialisation
# (/openapi/v2, `kubectl apply`); switching it off is valid from Go 1.25 on.
GO_ENV = {"CGO_ENABLED": "0", "GOEXPERIMENT": "nojsonv2"}
# Without these, every component reports v0.0.0-master: kubectl/helm version checks and the node's
# kubeletVersion would lie. The same -X lines as upstream's hack/lib/version.sh.
_VERSION_PACKAGES = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")

BUILD_TIMEOUT = 45 * 60.0  # one binary, cold, on 2 cores takes ~4 min; a stall must still end
APT_TIMEOUT = 20 * 60.0

Log = Callable[[str], None]


class InstallError(RuntimeError):
    """A step failed; the message names the step and ends with the last lines of its output."""


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _run(
    step: str,
    args: Sequence[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    try:
        proc = subprocess.run(
            list(args),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else (exc.output or "")
        raise InstallError(f"{step}: did not finish within {timeout:g} s\n{_tail(out)}") from exc
    except FileNotFoundError as exc:
        raise InstallError(f"{step}: {args[0]} not found") from exc
    if proc.returncode != 0:
        raise InstallError(f"{step}: `{' '.join(args)}` exited {proc.returncode}\n{_tail(proc.stdout)}")
    return proc.stdout


def _stderr_log(msg: str) -> None:
    print(f"devcluster: {msg}", flush=True, file=sys.stderr)


# -- Debian packages


def missing_packages(packages: Sequence[str] = APT_PACKAGES) -> list[str]:
    missing = []
    for pkg in packages:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0 or "install ok installed" not in proc.stdout:
            missing.append(pkg)
    return missing


@contextlib.contextmanager
def _services_held_back() -> Iterator[None]:
    """Keep maintainer scripts from starting daemons on the host (the Debian policy-rc.d protocol)."""
    policy = Path("/usr/sbin/policy-rc.d")
    if policy.exists():  # an existing policy (e.g. `exit 101` in images) stays as it is
        yield
        return
    policy.write_text("#!/bin/sh\n# svcscope devcluster: no daemons on the host during install\nexit 101\n")
    policy.chmod(0o755)
    try:
        yield
    finally:
        policy.unlink(missing_ok=True)


def _stop_host_services() -> None:
    """If a service manager started them anyway, stop and disable them: ours run inside the netns."""
    if not Path("/run/systemd/system").is_dir():
        return  # no systemd: with policy-rc.d in place nothing was started
    for svc in HOST_SERVICES:
        subprocess.run(["systemctl", "disable", "--now", svc], capture_output=True, check=False)


def ensure_packages(packages: Sequence[str] = APT_PACKAGES, *, log: Log = _stderr_log) -> list[str]:
    """Install the missing packages (apt-get update once, only if something is missing); returns them."""
    missing = missing_packages(packages)
    if not missing:
        return []
    log(f"installing Debian packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Wait for a concurrent apt (another helper, unattended upgrades) instead of failing on its lock.
    lock_wait = ["-o", "DPkg::Lock::Timeout=600"]
    with _services_held_back():
        _run("apt-get update", ["apt-get", *lock_wait, "update", "-q"], timeout=APT_TIMEOUT, env=env)
        _run(
            "apt-get install",
            ["apt-get", *lock_wait, "install", "-y", "-q", "--no-install-recommends", *missing],
            timeout=APT_TIMEOUT,
            env=env,
        )
    _stop_host_services()
    still = missing_packages(packages)
    if still:
        raise InstallError(f"apt-get install: still missing after install: {' '.join(still)}")
    return missing


# -- Go binaries


def go_version() -> str:
    out = _run("go version", ["go", "env", "GOVERSION"], timeout=60)
    return out.strip()


def cache_key() -> str:
    """Names every pin plus a digest of go.mod/go.sum, so any change of inputs gets a fresh directory."""
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        digest.update((GO_MODULE_DIR / name).read_bytes())
    digest.update(repr(sorted(GO_ENV.items())).encode())
    return (
        f"k8s-{KUBE_VERSION}_coredns-{COREDNS_VERSION}_helm-{HELM_VERSION}_{go_version()}"
        f"_{digest.hexdigest()[:10]}"
    )


def bin_dir() -> Path:
    """Where the binaries of the current pins live (whether or not they are built yet)."""
    return BIN_CACHE / cache_key()


def binary(name: str) -> Path:
    """Path of one built binary; raises if it is not built (call ensure_binaries first)."""
    if name not in BINARIES:
        raise ValueError(f"unknown devcluster binary {name!r}; known: {', '.join(BINARIES)}")
    path = bin_dir() / name
    if not path.is_file():
        raise InstallError(
            f"{name} is not built yet ({path}); run `python -m devcluster up` or ensure_binaries()"
        )
    return path


def _ldflags() -> str:
    major, minor = KUBE_VERSION.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in _VERSION_PACKAGES:
        flags += [
            f"-X {pkg}.gitVersion={KUBE_VERSION}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return " ".join(flags)


def _build_command(name: str, out: Path, jobs: int) -> tuple[list[str], Path | None]:
    """The go command for one binary and the directory to run it in."""
    common = ["-p", str(jobs), "-trimpath"]
    if name in KUBE_BINARIES:
        cmd = [
            "go",
            "build",
            *common,
            "-ldflags",
            _ldflags(),
            "-o",
            str(out),
            f"k8s.io/kubernetes/cmd/{name}",
        ]
        return cmd, GO_MODULE_DIR
    pkg, version = {
        "coredns": (COREDNS_MODULE, COREDNS_VERSION),
        "helm": (f"{HELM_MODULE}/cmd/helm", HELM_VERSION),
    }[name]
    # `go install PKG@VERSION` builds against the module's own go.mod; GOBIN points at the staging dir.
    return ["go", "install", *common, "-ldflags", "-s -w", f"{pkg}@{version}"], None


def _go_env(gobin: Path | None = None) -> dict[str, str]:
    env = {**os.environ, **GO_ENV}
    env.pop("GOFLAGS", None)  # a user's -mod=vendor or similar would break `go install pkg@version`
    env["GOFLAGS"] = "-buildvcs=false"
    if gobin is not None:
        env["GOBIN"] = str(gobin)
    return env


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # a second build waits and then finds everything built
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build_one(name: str, staging: Path, jobs: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=staging))
    try:
        cmd, cwd = _build_command(name, tmp / name, jobs)
        _run(f"go build {name}", cmd, timeout=BUILD_TIMEOUT, env=_go_env(gobin=tmp), cwd=cwd or tmp)
        built = tmp / name
        if not built.is_file():
            raise InstallError(f"go build {name}: finished but {built} is missing")
        built.replace(staging / name)  # atomic: a binary in the directory is always complete
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_binaries(*, jobs: int = 2, log: Log = _stderr_log) -> Path:
    """Build whatever of BINARIES is missing into the keyed cache directory and return that directory.

    Builds go to `<key>.partial/` (each binary renamed in when complete, so an interrupted build resumes
    where it stopped); the directory is renamed to `<key>` once all are there. `jobs` bounds parallel
    compiles: each takes up to ~2 GB of memory.
    """
    final = bin_dir()
    if all((final / name).is_file() for name in BINARIES):
        return final
    with _locked(BIN_CACHE / ".lock"):
        if all((final / name).is_file() for name in BINARIES):
            return final  # built by whoever held the lock before us
        staging = final.with_name(final.name + ".partial")
        staging.mkdir(parents=True, exist_ok=True)
        if final.is_dir():  # an older layout or a hand-made dir: keep what is there
            for item in final.iterdir():
                if item.name in BINARIES and not (staging / item.name).exists():
                    shutil.copy2(item, staging / item.name)
            shutil.rmtree(final)
        for name in BINARIES:
            if (staging / name).is_file():
                continue
            started = time.monotonic()
            log(f"building {name} (Go, cold ~1-4 min each on 2 cores)")
            _build_one(name, staging, jobs)
            log(f"built {name} in {time.monotonic() - started:.0f} s")
        staging.rename(final)
    return final


def main() -> None:
    ensure_packages()
    print(ensure_binaries())


if __name__ == "__main__":
    main()
