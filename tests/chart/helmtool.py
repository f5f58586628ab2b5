"""Finding and running the helm binary for the chart tests (also used by the e2e chart tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from devcluster import install

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "svcscope"
VALUES_DIR = Path(__file__).resolve().parent / "values"
GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
RELEASE = "svcscope"
NAMESPACE = "svcscope"
# Regenerate the golden files instead of comparing: SVCSCOPE_UPDATE_GOLDEN=1 pytest tests/chart
UPDATE_GOLDEN_ENV = "SVCSCOPE_UPDATE_GOLDEN"


class HelmMissingError(RuntimeError):
    pass


def find_helm() -> Path:
    """$SVCSCOPE_HELM, else the devcluster's build of its pinned helm, else helm on PATH. Never downloads."""
    explicit = os.environ.get("SVCSCOPE_HELM")
    if explicit:
        path = Path(explicit)
        if not os.access(path, os.X_OK):
            raise HelmMissingError(f"SVCSCOPE_HELM={explicit} is not an executable file")
        return path
    built = install.bin_dir() / "helm"
    if os.access(built, os.X_OK):
        return built
    on_path = shutil.which("helm")
    if on_path:
        return Path(on_path)
    raise HelmMissingError(
        "helm not found: the chart tests need it. `make install` (python -m devcluster install) builds it "
        f"into {built}; or point SVCSCOPE_HELM at a helm binary."
    )


def run_helm(helm: Path, args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        # Keep helm away from the user's own config and any cluster: `template` and `lint` need neither.
        "HELM_CACHE_HOME": str(REPO / "build" / "helm" / "cache"),
        "HELM_CONFIG_HOME": str(REPO / "build" / "helm" / "config"),
        "HELM_DATA_HOME": str(REPO / "build" / "helm" / "data"),
    }
    proc = subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return proc


def template_args(values_files: Sequence[Path] = (), sets: Sequence[str] = ()) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for f in values_files:
        args += ["--values", str(f)]
    for s in sets:
        args += ["--set", s]
    return args


def render(helm: Path, values_files: Sequence[Path] = (), sets: Sequence[str] = ()) -> str:
    return run_helm(helm, template_args(values_files, sets)).stdout


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind(docs: Sequence[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]
