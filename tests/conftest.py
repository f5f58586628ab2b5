"""Tests run without a run store unless they configure one: the default ``SVCSCOPE_STORE_PATH``,
/var/lib/svcscope/runs.db, is the chart's volume and does not exist on a test machine. Set in the
environment (not per test) so that dashboards started by module-scoped fixtures inherit it too."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("SVCSCOPE_STORE_PATH", "")
