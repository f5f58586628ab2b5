"""Small images like the ones users exec into (busybox, a curl image, a distroless-like one), written by hand
as docker-archives from this machine's own binaries and imported into every node's containerd. Nothing
is pulled. (No tests in this module.)

- ``WGET_IMAGE``: busybox with sh, wget and the few helpers of a busybox image (its nc too: the static
  busybox runs every applet from its sh), and no other client;
- ``CURL_IMAGE``: this machine's curl with its shared libraries, and busybox's sh and helpers;
- ``SHELL_ONLY_IMAGE``: Debian's dash as sh and nothing else (busybox's sh would not do: the static build
  runs its applets, wget and nc among them, without any file on PATH);
- ``NO_SHELL_IMAGE``: one static binary and nothing else (the devcluster's pause image is exactly that).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from devcluster import images, topology

BUSYBOX = Path("/bin/busybox")
HELPERS = ("sh", "head", "od", "tr", "sleep", "date", "cat", "adjtimex")
WGET_IMAGE = "localhost/svcscope-e2e-wget:1"
CURL_IMAGE = "localhost/svcscope-e2e-curl:1"
SHELL_ONLY_IMAGE = "localhost/svcscope-e2e-shell:1"
NO_SHELL_IMAGE = images.PAUSE_IMAGE
PYTHON_IMAGE = images.BASE_IMAGE  # Debian minbase + python3: sh and coreutils, no curl, wget or nc
IDLE = ("/bin/busybox", "sleep", "2147483647")


def _add(tar: tarfile.TarFile, name: str, *, data: bytes | None = None, link: str | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    if link is not None:
        info.type, info.linkname = tarfile.SYMTYPE, link
        tar.addfile(info)
    elif data is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
    else:
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))


def write_image(target: Path, tag: str, files: Mapping[str, Path], links: Mapping[str, str]) -> None:
    """A one-layer docker-archive with ``files`` (path in image -> file here) and symlinks."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.GNU_FORMAT) as layer:
        names = [*files, *links]
        dirs = sorted({str(p) for n in names for p in Path(n).parents if str(p) != "."})
        for d in dirs:
            _add(layer, d)
        for name, source in sorted(files.items()):
            _add(layer, name, data=source.read_bytes())
        for name, to in sorted(links.items()):
            _add(layer, name, link=to)
    layer_bytes = layer_buf.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": list(IDLE), "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_name = diff_id.removeprefix("sha256:") + "/layer.tar"
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": [layer_name]}]
    with tarfile.open(target, mode="w", format=tarfile.USTAR_FORMAT) as out:
        for name, data in ((config_name, config_bytes), (layer_name, layer_bytes)):
            if "/" in name:
                _add(out, str(Path(name).parent))
            _add(out, name, data=data)
        _add(out, "manifest.json", data=json.dumps(manifest).encode())


def _busybox(applets: Sequence[str]) -> tuple[dict[str, Path], dict[str, str]]:
    return {"bin/busybox": BUSYBOX}, {f"bin/{a}": "busybox" for a in applets}


def _shared_libraries(binary: Path) -> dict[str, Path]:
    """The binary's shared libraries and loader, at the paths ldd names (resolved to real files)."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    found: dict[str, Path] = {}
    for line in out.splitlines():
        words = line.split()
        path = next((w for w in words if w.startswith("/")), None)
        if path:
            found[path.lstrip("/")] = Path(path).resolve()
    return found


def specs() -> dict[str, tuple[dict[str, Path], dict[str, str]]]:
    wget = _busybox([*HELPERS, "wget"])
    dash = Path(shutil.which("dash") or "/bin/dash")
    shell: tuple[dict[str, Path], dict[str, str]] = (
        {"bin/busybox": BUSYBOX, "bin/sh": dash.resolve(), **_shared_libraries(dash)},
        {},
    )
    curl_path = Path(shutil.which("curl") or "/usr/bin/curl")
    curl_files, curl_links = _busybox(HELPERS)
    curl_files = {**curl_files, "usr/bin/curl": curl_path.resolve(), **_shared_libraries(curl_path)}
    return {WGET_IMAGE: wget, SHELL_ONLY_IMAGE: shell, CURL_IMAGE: (curl_files, curl_links)}


def build_and_import() -> None:
    """Write the images (cached by their inputs) and import them into every node of the instance."""
    cache = images.IMAGE_CACHE
    cache.mkdir(parents=True, exist_ok=True)
    tarballs: dict[str, Path] = {}
    for tag, (files, links) in specs().items():
        digest = hashlib.sha256(repr(sorted(links.items())).encode())
        for name, source in sorted(files.items()):
            digest.update(name.encode() + hashlib.sha256(source.read_bytes()).digest())
        target = cache / f"{tag.replace('localhost/', '').replace(':', '_')}-{digest.hexdigest()[:16]}.tar"
        if not target.is_file():
            tmp = target.with_suffix(".tmp")
            write_image(tmp, tag, files, links)
            tmp.replace(target)
        tarballs[tag] = target
    tarballs[PYTHON_IMAGE] = images.build_base()  # built (cached) for the svcscope image, not imported
    for node in topology.current().node_list():
        ctr = images.ctr_cmd(node.containerd_socket)
        known = images.imported_labels(ctr)
        for tag, tarball in tarballs.items():
            images.import_tarball(tag, tarball, ctr, known=known)
