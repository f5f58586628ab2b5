"""The pure parts of devcluster.images / install: tarball format, mirror lookup, ignore rules, cache keys."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from devcluster import images, install


def test_docker_archive_is_reproducible_and_well_formed(tmp_path: Path) -> None:
    files = {"bin/tool": (b"\x7fELF fake", 0o755)}
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    images.write_docker_archive(a, "localhost/x:1", files, ["/bin/tool", "run"])
    images.write_docker_archive(b, "localhost/x:1", files, ["/bin/tool", "run"])
    assert a.read_bytes() == b.read_bytes()
    with tarfile.open(a) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        [entry] = manifest
        assert entry["RepoTags"] == ["localhost/x:1"]
        config = json.loads(tar.extractfile(entry["Config"]).read())  # type: ignore[union-attr]
        layer = tar.extractfile(entry["Layers"][0]).read()  # type: ignore[union-attr]
    assert config["config"]["Entrypoint"] == ["/bin/tool", "run"]
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]
    assert config["os"] == "linux" and config["architecture"] == "amd64"


def test_debian_mirror_from_deb822_and_list(tmp_path: Path) -> None:
    deb822 = tmp_path / "debian.sources"
    deb822.write_text(
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\n"
    )
    assert images.debian_mirror([deb822]) == "http://mirror.example/debian"
    one_line = tmp_path / "sources.list"
    one_line.write_text("# comment\ndeb [arch=amd64] http://other.example/debian bookworm main\n")
    assert images.debian_mirror([one_line]) == "http://other.example/debian"
    assert images.debian_mirror([tmp_path / "missing.list"]) == images.DEFAULT_MIRROR


@pytest.mark.parametrize(
    ("rel", "ignored"),
    [
        (".venv/lib/x.py", True),
        (".git", True),
        ("app/echo.py", False),
        ("tests/unit/test_x.py", True),
        ("tests/keep.txt", False),
        ("app/__pycache__/x.pyc", True),
    ],
)
def test_dockerignore_rules(rel: str, ignored: bool) -> None:
    patterns = [".venv", ".git", "tests", "!tests/keep.txt", "**/__pycache__"]
    assert images._ignored(rel, patterns) is ignored


def test_context_digest_follows_content_and_ignores(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text(".venv\n")
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / ".venv").mkdir()
    first = images.context_digest(tmp_path)
    (tmp_path / ".venv" / "big").write_text("ignored")
    assert images.context_digest(tmp_path) == first
    (tmp_path / "a.py").write_text("x = 2\n")
    assert images.context_digest(tmp_path) != first


def test_ldflags_stamp_the_kubernetes_version() -> None:
    flags = install._ldflags()
    assert f"k8s.io/component-base/version.gitVersion={install.KUBE_VERSION}" in flags
    assert "k8s.io/client-go/pkg/version.gitMinor=36" in flags
    assert flags.startswith("-s -w")


def test_binary_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown devcluster binary"):
        install.binary("docker")
