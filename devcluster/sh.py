"""Running commands: one helper so every failure message carries the command and its stderr."""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

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


class StepError(RuntimeError):
    """A build or install step failed; the message names the step and ends with its last output lines."""


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_step(
    step: str,
    args: Sequence[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    try:
        proc = subprocess.run(
            list(args),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else (exc.output or "")
        raise StepError(f"{step}: did not finish within {timeout:g} s\n{tail(out)}") from exc
    except FileNotFoundError as exc:
        raise StepError(f"{step}: {args[0]} not found") from exc
    if proc.returncode != 0:
        raise StepError(f"{step}: `{' '.join(args)}` exited {proc.returncode}\n{tail(proc.stdout)}")
    return proc.stdout


def log(msg: str) -> None:
    print(f"devcluster: {msg}", flush=True, file=sys.stderr)
