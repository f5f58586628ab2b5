"""Running commands: one helper so every failure message carries the command and its stderr."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Mapping, Sequence

from devcluster import paths


class CommandError(RuntimeError):
    """A command exited non-zero; the message names the command and ends with its stderr."""


def run(
    args: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=dict(env) if env is not None else None,
            input=input_text,
            stdin=None if input_text is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(f"`{shlex.join(args)}` did not finish within {timeout:g} s") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise CommandError(f"`{shlex.join(args)}` exited {proc.returncode}: {detail}")
    return proc


def in_netns(args: Sequence[str]) -> list[str]:
    """Prefix a command so that it runs in the node's network namespace (host mount namespace)."""
    return ["nsenter", f"--net={paths.NETNS_PATH}", "--", *args]
