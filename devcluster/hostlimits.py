"""Host-wide kernel limits that several clusters on one machine outgrow.

Every kubelet, kube-proxy and containerd opens inotify instances, and the kernel's per-user default (128)
is shared by every root process on the machine. Two or three instances of the cluster (the tests' own,
the multi-node one, the demo) use it up, and kube-proxy then exits with "too many open files" while the
node waits to become Ready. The limits are only ever raised, never lowered, and the values are those kind
documents for the same problem.
"""

from __future__ import annotations

from pathlib import Path

SYSCTL_DIR = Path("/proc/sys/fs/inotify")
FLOORS = {"max_user_instances": 1024, "max_user_watches": 524288}


class HostLimitError(RuntimeError):
    """A limit is below what the cluster needs and could not be raised."""


def raise_floors(directory: Path = SYSCTL_DIR, floors: dict[str, int] = FLOORS) -> dict[str, int]:
    """Raise each limit below its floor to the floor; returns what was changed (name -> new value)."""
    changed: dict[str, int] = {}
    for name, floor in floors.items():
        path = directory / name
        try:
            current = int(path.read_text().strip())
        except (OSError, ValueError):
            continue  # a kernel without the knob has no such limit to outgrow
        if current >= floor:
            continue
        try:
            path.write_text(f"{floor}\n")
        except OSError as exc:
            raise HostLimitError(
                f"fs.inotify.{name} is {current}, below the {floor} that several cluster instances need, and "
                f"raising it failed ({exc.strerror}): run `sysctl -w fs.inotify.{name}={floor}` as root"
            ) from exc
        changed[name] = floor
    return changed
