"""Container images without a registry: build them locally, cache them as tarballs, import into containerd.

- `localhost/pause:3.10`: written by hand as a docker-archive (manifest.json + config + one layer) holding
  Debian's static busybox, entrypoint `busybox sleep 2147483647`. A sandbox container only has to hold the
  pod's namespaces open; containerd stops sandboxes with SIGKILL, so the real pause's signal handling and
  zombie reaping are not needed (pods do not share a PID namespace here). No Go or C code of our own.
- `localhost/svcscope-base:bookworm`: debootstrap (minbase + python3) from the machine's Debian mirror,
  turned into an image with buildah.
- `localhost/svcscope-echo:dev`: base + app/echo/ (devcluster/images/echo.Dockerfile).
- `build_dockerfile()` builds any Dockerfile (the project's own, BASE_IMAGE = the base above).

buildah runs with its own storage root under /var/lib/svcscope-devcluster-buildah (vfs driver, chroot
isolation: no overlay mounts, no user namespaces), so nothing lands in the host's /var/lib/containers and
`clean_build_state()` removes it all. Tarballs are docker-archives: `ctr images import` names them from their
RepoTags, whereas an OCI archive's ref name is dropped by ctr unless it is given a matching --base-name.
Each tarball's file name carries a hash of its inputs, so a warm machine rebuilds nothing.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from devcluster import paths, sh

PAUSE_IMAGE = "localhost/pause:3.10"
BASE_IMAGE = "localhost/svcscope-base:bookworm"
ECHO_IMAGE = "localhost/svcscope-echo:dev"

IMAGE_CACHE = paths.CACHE_DIR / "images"
BUILDAH_DIR = Path("/var/lib/svcscope-devcluster-buildah")
IMAGES_DIR = Path(__file__).resolve().parent / "images"  # Dockerfiles
REPO_ROOT = Path(__file__).resolve().parent.parent
CONTAINERD_NAMESPACE = "k8s.io"  # the namespace the CRI plugin reads images from

DEBIAN_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
BUSYBOX = Path("/bin/busybox")  # from busybox-static
PAUSE_ENTRYPOINT = ("/bin/busybox", "sleep", "2147483647")

# Bump to invalidate every cached tarball when the way they are made changes.
_FORMAT = "1"
_LABEL = "svcscope.input"  # containerd image label: the input hash of the imported tarball

BUILD_TIMEOUT = 30 * 60.0
Log = Callable[[str], None]


class ImageError(RuntimeError):
    """A step failed; the message names the step and ends with the last lines of its output."""


def _log(msg: str) -> None:
    sh.log(msg)


def _run(
    step: str,
    args: Sequence[str],
    *,
    timeout: float = BUILD_TIMEOUT,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    try:
        return sh.run_step(step, args, timeout=timeout, cwd=cwd, env=dict(env) if env is not None else None)
    except sh.StepError as exc:
        raise ImageError(str(exc)) from exc


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join((_FORMAT, *parts)).encode()).hexdigest()[:16]


def _slug(image: str) -> str:
    return image.replace("localhost/", "").replace("/", "_").replace(":", "_")


def _cached(image: str, key: str) -> Path:
    return IMAGE_CACHE / f"{_slug(image)}-{key}.tar"


@contextlib.contextmanager
def _atomic_target(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to `target`; renamed onto it only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def _prune(image: str, keep: Path) -> None:
    """Drop tarballs of the same image made from older inputs."""
    for old in IMAGE_CACHE.glob(f"{_slug(image)}-*.tar"):
        if old != keep:
            old.unlink(missing_ok=True)


# -- pause: a docker-archive written by hand


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0  # reproducible bytes, so the digests stay the same across rebuilds
    tar.addfile(info, io.BytesIO(data))


def _dir_entry(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)


def write_docker_archive(
    target: Path, tag: str, files: Mapping[str, tuple[bytes, int]], entrypoint: Sequence[str]
) -> None:
    """A one-layer docker-archive (what `docker save` writes), the format `ctr images import` reads."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.USTAR_FORMAT) as layer:
        dirs = sorted({str(Path(n).parent) for n in files if str(Path(n).parent) != "."})
        for d in dirs:
            _dir_entry(layer, d)
        for name, (data, mode) in sorted(files.items()):
            _tar_add(layer, name, data, mode)
    layer_bytes = layer_buf.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Entrypoint": list(entrypoint), "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "svcscope devcluster images.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_name = diff_id.removeprefix("sha256:") + "/layer.tar"
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": [layer_name]}]
    with tarfile.open(target, mode="w", format=tarfile.USTAR_FORMAT) as out:
        _tar_add(out, config_name, config_bytes)
        _dir_entry(out, str(Path(layer_name).parent))
        _tar_add(out, layer_name, layer_bytes)
        _tar_add(out, "manifest.json", json.dumps(manifest).encode())


def build_pause(*, log: Log = _log) -> Path:
    busybox = BUSYBOX.read_bytes()
    key = _key("pause", PAUSE_IMAGE, hashlib.sha256(busybox).hexdigest(), *PAUSE_ENTRYPOINT)
    target = _cached(PAUSE_IMAGE, key)
    if target.is_file():
        return target
    log(f"writing {PAUSE_IMAGE} (busybox sleep)")
    with _atomic_target(target) as tmp:
        write_docker_archive(tmp, PAUSE_IMAGE, {"bin/busybox": (busybox, 0o755)}, PAUSE_ENTRYPOINT)
    _prune(PAUSE_IMAGE, target)
    return target


# -- buildah


def buildah_cmd(*args: str) -> list[str]:
    """buildah with the devcluster's private storage (never the host's /var/lib/containers)."""
    return [
        "buildah",
        "--root", str(BUILDAH_DIR / "storage"),
        "--runroot", str(BUILDAH_DIR / "run"),
        "--storage-driver", "vfs",
        *args,
    ]  # fmt: skip


def _buildah_env() -> dict[str, str]:
    return {**os.environ, "BUILDAH_ISOLATION": "chroot", "STORAGE_DRIVER": "vfs"}


def _buildah(step: str, *args: str, cwd: Path | None = None) -> str:
    return _run(step, buildah_cmd(*args), cwd=cwd, env=_buildah_env())


def _in_storage(image: str) -> bool:
    proc = subprocess.run(
        buildah_cmd("inspect", "--type", "image", image),
        capture_output=True, text=True, env=_buildah_env(), check=False,
    )  # fmt: skip
    return proc.returncode == 0


def _push(image: str, target: Path) -> None:
    with _atomic_target(target) as tmp:
        _buildah(f"buildah push {image}", "push", image, f"docker-archive:{tmp}:{image}")


# -- base: debootstrap + buildah


def debian_mirror(sources: Sequence[Path] | None = None) -> str:
    """The machine's configured Debian mirror (deb822 .sources or one-line sources.list), main archive."""
    if sources is None:
        sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for src in sources:
        if not src.is_file() or not (src.suffix in (".list", ".sources") or src.name == "sources.list"):
            continue
        for uri, suites in _parse_sources(src.read_text(errors="replace"), deb822=src.suffix == ".sources"):
            if DEBIAN_SUITE in suites and "security" not in uri:
                return uri.rstrip("/")
    return DEFAULT_MIRROR


def _parse_sources(text: str, *, deb822: bool) -> Iterator[tuple[str, list[str]]]:
    if deb822:
        for stanza in text.split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                for uri in fields.get("uris", "").split():
                    yield uri, fields.get("suites", "").split()
        return
    for line in text.splitlines():
        words = [w for w in line.split() if not w.startswith("[")]
        if len(words) >= 3 and words[0] == "deb":
            yield words[1], [words[2]]


def _base_key() -> str:
    debootstrap = _run("debootstrap --version", ["debootstrap", "--version"]).strip()
    return _key("base", BASE_IMAGE, debian_mirror(), DEBIAN_SUITE, ",".join(BASE_PACKAGES), debootstrap)


def base_tarball() -> Path:
    return _cached(BASE_IMAGE, _base_key())


def build_base(*, log: Log = _log) -> Path:
    """debootstrap a Python base and make it `localhost/svcscope-base:bookworm` (buildah + tarball)."""
    target = base_tarball()
    if target.is_file():
        _ensure_in_storage(BASE_IMAGE, target)
        return target
    mirror = debian_mirror()
    started = time.monotonic()
    log(f"debootstrap {DEBIAN_SUITE} from {mirror} (~1 min)")
    BUILDAH_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="base-", dir=BUILDAH_DIR) as work:
        rootfs = Path(work) / "rootfs"
        _run(
            "debootstrap",
            # A private mount namespace: the /proc and /sys that debootstrap mounts into the chroot
            # vanish with it, even when debootstrap fails half-way, and never show on the host.
            ["unshare", "--mount", "--propagation", "private",
             "debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
             DEBIAN_SUITE, str(rootfs), mirror],
        )  # fmt: skip
        _trim_rootfs(rootfs)
        rootfs_tar = Path(work) / "rootfs.tar"
        # A tar keeps owners and modes exactly; `buildah add` of a local tar unpacks it as it is.
        _run("tar rootfs", ["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(rootfs_tar), "."])
        shutil.rmtree(rootfs)
        container = _buildah("buildah from scratch", "from", "scratch").strip()
        try:
            _buildah("buildah add rootfs", "add", container, str(rootfs_tar), "/")
            _buildah(
                "buildah config",
                "config",
                "--env", "LANG=C.UTF-8",
                "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--cmd", "python3",
                "--label", f"{_LABEL}={target.stem}",
                container,
            )  # fmt: skip
            _buildah("buildah commit base", "commit", "--rm", container, BASE_IMAGE)
        except BaseException:
            subprocess.run(buildah_cmd("rm", container), capture_output=True, env=_buildah_env(), check=False)
            raise
    _push(BASE_IMAGE, target)
    _prune(BASE_IMAGE, target)
    log(f"built {BASE_IMAGE} in {time.monotonic() - started:.0f} s")
    return target


def _trim_rootfs(rootfs: Path) -> None:
    """Drop what an image does not need: downloaded .debs, apt lists, docs."""
    for pattern in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_*", "var/cache/apt/*.bin"):
        for path in rootfs.glob(pattern):
            path.unlink(missing_ok=True)
    for tree in ("usr/share/doc", "usr/share/man", "usr/share/info"):
        shutil.rmtree(rootfs / tree, ignore_errors=True)


def _ensure_in_storage(image: str, tarball: Path) -> None:
    """A cached tarball is not enough for `FROM image`: buildah must hold it in its own storage."""
    if not _in_storage(image):
        _buildah(f"buildah pull {image}", "pull", f"docker-archive:{tarball}")
        _buildah(f"buildah tag {image}", "tag", _image_id_of(tarball), image)


def _image_id_of(tarball: Path) -> str:
    with tarfile.open(tarball) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        manifest = json.loads(member.read())
    return str(manifest[0]["Config"]).removesuffix(".json").removeprefix("blobs/sha256/")


# -- Dockerfiles


def _ignore_patterns(context: Path) -> list[str]:
    ignore = context / ".dockerignore"
    if not ignore.is_file():
        return []
    lines = (line.strip() for line in ignore.read_text().splitlines())
    return [line.removeprefix("./").rstrip("/") for line in lines if line and not line.startswith("#")]


def _ignored(rel: str, patterns: Sequence[str]) -> bool:
    """.dockerignore matching, simplified: last matching pattern wins, a match on a parent dir counts."""
    result = False
    candidates = [rel] + [str(p) for p in Path(rel).parents if str(p) != "."]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.removeprefix("!")
        if any(
            fnmatch.fnmatchcase(c, pat) or fnmatch.fnmatchcase(c, pat.replace("**/", "")) for c in candidates
        ):
            result = not negate
    return result


def context_digest(context: Path) -> str:
    """Hash of every file buildah would send (names, modes, contents), honouring .dockerignore."""
    patterns = _ignore_patterns(context)
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(context):
        rel_root = os.path.relpath(root, context)
        dirs[:] = sorted(
            d for d in dirs if not _ignored(os.path.normpath(os.path.join(rel_root, d)), patterns)
        )
        for name in sorted(files):
            rel = os.path.normpath(os.path.join(rel_root, name))
            if _ignored(rel, patterns):
                continue
            path = Path(root) / name
            if not path.is_file():
                continue
            digest.update(f"{rel}\0{path.stat().st_mode & 0o777}\0".encode())
            digest.update(_sha256_file(path).encode())
    return digest.hexdigest()


def build_dockerfile(
    context: Path,
    dockerfile: Path,
    tag: str,
    build_args: Mapping[str, str] | None = None,
    *,
    log: Log = _log,
) -> Path:
    """Build a Dockerfile with buildah and return a docker-archive tarball of `tag` (cached by inputs).

    BASE_IMAGE defaults to localhost/svcscope-base:bookworm, which is built first if needed.
    """
    args = {"BASE_IMAGE": BASE_IMAGE, **(build_args or {})}
    base_key = build_base(log=log).stem if args["BASE_IMAGE"] == BASE_IMAGE else args["BASE_IMAGE"]
    key = _key(
        "dockerfile", tag, base_key, dockerfile.read_text(), json.dumps(args, sort_keys=True),
        context_digest(context),
    )  # fmt: skip
    target = _cached(tag, key)
    if target.is_file():
        return target
    started = time.monotonic()
    log(f"buildah build {tag} from {dockerfile}")
    build_flags = [f"--build-arg={k}={v}" for k, v in sorted(args.items())]
    _buildah(
        f"buildah build {tag}",
        "build", "--pull=never", "--layers=false", "--isolation=chroot",
        "-f", str(dockerfile), "-t", tag, *build_flags, str(context),
    )  # fmt: skip
    _push(tag, target)
    _prune(tag, target)
    # The previous build of this tag is now dangling; vfs keeps a full copy of it, so drop it.
    subprocess.run(buildah_cmd("rmi", "--prune"), capture_output=True, env=_buildah_env(), check=False)
    log(f"built {tag} in {time.monotonic() - started:.0f} s")
    return target


def build_echo(*, log: Log = _log) -> Path:
    """`localhost/svcscope-echo:dev`: the base + the app/echo package, built from a context of just those."""
    with tempfile.TemporaryDirectory(prefix="echo-ctx-") as tmp:
        ctx = Path(tmp)
        (ctx / "app").mkdir()
        # Only the stdlib package goes in: the echo image must not depend on the dashboard's packages.
        shutil.copytree(
            REPO_ROOT / "app" / "echo", ctx / "app" / "echo", ignore=shutil.ignore_patterns("__pycache__")
        )
        (ctx / "app" / "__init__.py").write_text("")
        for path in (ctx / "app" / "echo").iterdir():
            os.utime(path, (0, 0))
        return build_dockerfile(ctx, IMAGES_DIR / "echo.Dockerfile", ECHO_IMAGE, log=log)


def build_all(*, log: Log = _log) -> dict[str, Path]:
    """Every devcluster image, image name -> tarball. Cheap when nothing changed."""
    return {
        PAUSE_IMAGE: build_pause(log=log),
        BASE_IMAGE: build_base(log=log),
        ECHO_IMAGE: build_echo(log=log),
    }


# -- containerd


def ctr_cmd(socket: Path = paths.CONTAINERD_SOCKET) -> list[str]:
    return ["ctr", "--address", str(socket), "--namespace", CONTAINERD_NAMESPACE]


def imported_labels(ctr: Sequence[str]) -> dict[str, str]:
    """image name -> our input label, for images in the namespace."""
    out = _run("ctr images ls", [*ctr, "images", "ls"], timeout=60)
    labels: dict[str, str] = {}
    for line in out.splitlines()[1:]:
        words = line.split()
        if not words:
            continue
        for word in words[1:]:
            for pair in word.split(","):
                name, _, value = pair.partition("=")
                if name == _LABEL:
                    labels[words[0]] = value
    return labels


def import_tarball(
    image: str,
    tarball: Path,
    ctr: Sequence[str] | None = None,
    *,
    snapshotter: str | None = None,
    known: Mapping[str, str] | None = None,
) -> bool:
    """Import one docker-archive unless the same tarball is already there; True if it imported."""
    ctr = list(ctr) if ctr is not None else ctr_cmd()
    if known is None:
        known = imported_labels(ctr)
    if known.get(image) == tarball.stem:
        return False
    flags = [f"--snapshotter={snapshotter}"] if snapshotter else []
    _run(f"ctr import {image}", [*ctr, "images", "import", *flags, str(tarball)], timeout=600)
    _run(f"ctr label {image}", [*ctr, "images", "label", image, f"{_LABEL}={tarball.stem}"], timeout=60)
    return True


def import_all(
    ctr: Sequence[str] | None = None,
    *,
    snapshotter: str | None = None,
    images: Mapping[str, Path] | None = None,
    log: Log = _log,
) -> list[str]:
    """Import the devcluster images (build_all() unless given) into containerd's k8s.io namespace.

    `ctr` is the ctr command prefix including --address and --namespace (default: ctr_cmd()); the
    snapshotter must be the one the CRI plugin uses (ctr's default is overlayfs). Returns what it imported.
    """
    ctr = list(ctr) if ctr is not None else ctr_cmd()
    images = images if images is not None else build_all(log=log)
    known = imported_labels(ctr)
    done = []
    for image, tarball in images.items():
        if import_tarball(image, tarball, ctr, snapshotter=snapshotter, known=known):
            done.append(image)
    return done


def clean_build_state() -> None:
    """Remove buildah's private storage (the tarball cache stays: it is what makes warm machines fast)."""
    shutil.rmtree(BUILDAH_DIR, ignore_errors=True)
