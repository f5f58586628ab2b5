"""The kubectl command lines the plugin runs, with the user's --kubeconfig/--context (pure but for `run`)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.plugin import PluginError

TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Kubectl:
    binary: str = "kubectl"
    kubeconfig: str | None = None
    context: str | None = None

    def base(self) -> list[str]:
        """kubectl with the user's connection flags (none given: kubectl's own rules, KUBECONFIG included)."""
        argv = [self.binary]
        if self.kubeconfig:
            argv += ["--kubeconfig", self.kubeconfig]
        if self.context:
            argv += ["--context", self.context]
        return argv

    def services_argv(self, namespace: str | None, selector: str) -> list[str]:
        where = ["--namespace", namespace] if namespace else ["--all-namespaces"]
        return [*self.base(), "get", "services", *where, "--selector", selector, "--output", "json"]

    def context_namespace_argv(self) -> list[str]:
        return [*self.base(), "config", "view", "--minify", "--output", "jsonpath={..namespace}"]

    def port_forward_argv(self, namespace: str, service: str, local_port: int, remote_port: int) -> list[str]:
        # 127.0.0.1 only: the dashboard may send requests inside the cluster, its port is not for the network.
        return [
            *self.base(), "--namespace", namespace, "port-forward", f"svc/{service}",
            f"{local_port}:{remote_port}", "--address", "127.0.0.1",
        ]  # fmt: skip

    def run(self, argv: Sequence[str]) -> str:
        """stdout of a kubectl command; its failure as a PluginError with kubectl's own words."""
        try:
            proc = subprocess.run(
                list(argv), capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except FileNotFoundError:
            raise PluginError(
                f"{self.binary!r} not found: install kubectl or give its path with --kubectl"
            ) from None
        except subprocess.TimeoutExpired:
            raise PluginError(
                f"`{' '.join(argv[1:4])} ...` got no answer in {TIMEOUT_S:g} s: is the cluster reachable "
                "(--kubeconfig, --context)?"
            ) from None
        if proc.returncode != 0:
            said = last_lines(proc.stderr or proc.stdout)
            raise PluginError(f"kubectl {' '.join(argv[len(self.base()) :][:2])} failed: {said}")
        return proc.stdout

    def run_json(self, argv: Sequence[str]) -> dict[str, Any]:
        out = self.run(argv)
        try:
            data = json.loads(out)
        except ValueError:
            raise PluginError(f"kubectl printed something other than JSON: {out[:200]!r}") from None
        if not isinstance(data, dict):
            raise PluginError(f"kubectl printed JSON of an unexpected shape: {out[:200]!r}")
        return data


def last_lines(text: str, count: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " / ".join(lines[-count:]) or "(no message)"
