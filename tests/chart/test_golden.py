"""Golden files of `helm template` for the chart's main configurations.

A change to the chart shows up as a diff of these files. Regenerate them deliberately with
``SVCSCOPE_UPDATE_GOLDEN=1 .venv/bin/pytest tests/chart`` and review the diff before committing.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

import pytest

from tests.chart.helmtool import GOLDEN_DIR, UPDATE_GOLDEN_ENV, VALUES_DIR, render

CASES = ["defaults", "namespaced-rbac", "all-features", "demo", "persistence", "persistence-existing-claim"]
# The CSRF key is random on every render without a cluster (test_chart checks it); the golden files hold a
# placeholder in its place.
CSRF_KEY = re.compile(r"^(  csrf-secret: )\S+$", re.MULTILINE)


@pytest.mark.parametrize("case", CASES)
def test_template_matches_golden(helm: Path, case: str) -> None:
    rendered, keys = CSRF_KEY.subn(r"\1(random)", render(helm, [VALUES_DIR / f"{case}.yaml"]))
    assert keys == 1
    golden = GOLDEN_DIR / f"{case}.yaml"
    if os.environ.get(UPDATE_GOLDEN_ENV) == "1":
        golden.write_text(rendered)
        return
    assert golden.exists(), f"{golden} is missing: run with {UPDATE_GOLDEN_ENV}=1 to create it"
    expected = golden.read_text()
    if rendered != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                rendered.splitlines(keepends=True),
                fromfile=f"golden/{case}.yaml",
                tofile="helm template",
                n=2,
            )
        )
        pytest.fail(
            f"`helm template` differs from golden/{case}.yaml ({UPDATE_GOLDEN_ENV}=1 regenerates):\n{diff}",
            pytrace=False,
        )


def test_every_case_has_values_and_golden_files() -> None:
    assert sorted(p.stem for p in VALUES_DIR.glob("*.yaml")) == sorted(CASES)
    assert sorted(p.stem for p in GOLDEN_DIR.glob("*.yaml")) == sorted(CASES)
