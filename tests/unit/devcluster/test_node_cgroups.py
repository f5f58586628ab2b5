"""`down` finds every process below the instance's cgroup root, even while kubelet removes pod cgroups."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from devcluster import node, paths


def test_cgroup_pids_skips_cgroups_removed_while_walking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node, "cgroup_hierarchies", lambda: [tmp_path])
    root = tmp_path / paths.CGROUP_ROOT.lstrip("/")
    kubepods = root / "kubepods"
    gone = kubepods / "pod1"
    gone.mkdir(parents=True)
    (root / "cgroup.procs").write_text("11\n")
    (kubepods / "cgroup.procs").write_text("22\n")
    (gone / "cgroup.procs").write_text("33\n")
    read = Path.read_text

    def read_then_pod_removed(self: Path, *args: Any, **kwargs: Any) -> str:
        text = read(self, *args, **kwargs)
        if self.parent == gone:
            shutil.rmtree(gone)  # kubelet removes the pod's cgroup right after `down` read it
        return text

    monkeypatch.setattr(Path, "read_text", read_then_pod_removed)
    assert node.cgroup_pids() == {11, 22, 33}
