"""Fixtures for every unit test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.probe import calibrate


@pytest.fixture(autouse=True)
def fresh_calibrations() -> Iterator[None]:
    """Calibrations are remembered for a while per endpoint set: no test may see another's."""
    calibrate.forget()
    yield
    calibrate.forget()
