"""The import-linter contracts in pyproject.toml hold, and each would catch the inversion it is for.

Each case copies ``app/`` and ``pyproject.toml`` to a temporary folder, adds one import that points the
wrong way, and runs ``lint-imports`` there: it must fail and name the broken contract.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
LAYERS = "Dependencies point one way"
CONFIG_ASIDE = "Configuration stays at the side"
PLUGIN_ALONE = "The kubectl plugin is standard library only"


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}  # the copy's app package, not the installed one
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "app", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_copy_keeps_every_contract(tree: Path) -> None:
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "inverted_import", "contract"),
    [
        # The adapter must not reach up into a sibling that uses it (kube once imported probe's origins).
        ("app/kube/actions.py", "import app.probe.runner", LAYERS),
        # The probe engine once read Settings to build its limits: config stays at the side.
        ("app/probe/runner.py", "import app.config", CONFIG_ASIDE),
        ("app/kube/cache.py", "import app.web.render", LAYERS),
        ("app/domain.py", "import app.kube.cache", LAYERS),
        ("app/probe/run.py", "import app.state", LAYERS),
        # The catalog and the probe engine are siblings: neither uses the other.
        ("app/catalog/query.py", "import app.probe.run", LAYERS),
        ("app/kube/cache.py", "import app.catalog.query", LAYERS),
        ("app/catalog/detail.py", "import app.web.render", LAYERS),
        # The kubectl plugin runs on users' machines with the standard library and kubectl only.
        ("app/plugin/release.py", "import app.domain", PLUGIN_ALONE),
        ("app/plugin/supervise.py", "import yaml", PLUGIN_ALONE),
    ],
)
def test_an_inverted_import_breaks_a_contract(
    tree: Path, module: str, inverted_import: str, contract: str
) -> None:
    with (tree / module).open("a") as f:
        f.write(f"\n{inverted_import}  # deliberately inverted\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    verdicts = [line for line in result.stdout.splitlines() if line.startswith(contract)]
    assert verdicts and verdicts[0].endswith("BROKEN"), result.stdout
