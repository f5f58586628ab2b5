from __future__ import annotations

from pathlib import Path

import pytest

from tests.chart.helmtool import HelmMissingError, find_helm


@pytest.fixture(scope="session")
def helm() -> Path:
    """The helm binary. Missing helm is a failure, not a skip: the chart checks are part of the suite."""
    try:
        return find_helm()
    except HelmMissingError as exc:
        pytest.fail(str(exc), pytrace=False)
