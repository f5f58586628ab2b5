"""Host limits are raised to their floors, never lowered, and a refusal names the sysctl to set."""

from __future__ import annotations

from pathlib import Path

import pytest

from devcluster.hostlimits import HostLimitError, raise_floors

FLOORS = {"max_user_instances": 1024, "max_user_watches": 524288}


def knobs(tmp_path: Path, **values: int) -> Path:
    for name, value in values.items():
        (tmp_path / name).write_text(f"{value}\n")
    return tmp_path


def test_limits_below_the_floor_are_raised_to_it(tmp_path: Path) -> None:
    directory = knobs(tmp_path, max_user_instances=128, max_user_watches=8192)
    assert raise_floors(directory, FLOORS) == FLOORS
    assert (directory / "max_user_instances").read_text() == "1024\n"
    assert (directory / "max_user_watches").read_text() == "524288\n"


def test_higher_limits_are_left_alone(tmp_path: Path) -> None:
    directory = knobs(tmp_path, max_user_instances=8192, max_user_watches=524288)
    assert raise_floors(directory, FLOORS) == {}
    assert (directory / "max_user_instances").read_text() == "8192\n"


def test_a_missing_knob_is_skipped(tmp_path: Path) -> None:
    directory = knobs(tmp_path, max_user_instances=128)
    assert raise_floors(directory, FLOORS) == {"max_user_instances": 1024}


def test_a_refused_write_names_the_sysctl_to_set(tmp_path: Path) -> None:
    # A read-only sysctl refuses writes even from root: it stands in for a knob the process may not raise.
    (tmp_path / "max_user_instances").symlink_to("/proc/sys/kernel/ngroups_max")
    floor = int(Path("/proc/sys/kernel/ngroups_max").read_text()) + 1
    with pytest.raises(HostLimitError, match=rf"sysctl -w fs\.inotify\.max_user_instances={floor}"):
        raise_floors(tmp_path, {"max_user_instances": floor})
