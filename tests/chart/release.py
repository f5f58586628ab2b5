"""Installing the chart into the real devcluster, for the e2e tests (test_chart, test_browser).

Each test gets its own namespace (the `namespace` fixture) and its own release in it; the custom-clusterIP
demo Service gets an address of its own so that tests never collide with `make demo` or with each other.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import select
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chart.helmtool import CHART, documents

READY_TIMEOUT_S = 180.0


def image_sets() -> list[str]:
    """The image this checkout built (SVCSCOPE_IMAGE, see scripts/demo.py); unset: the chart default."""
    image = os.environ.get("SVCSCOPE_IMAGE")
    if not image:
        return []
    repository, _, tag = image.rpartition(":")
    return [f"image.repository={repository}", f"image.tag={tag}"]


Completed = subprocess.CompletedProcess[str]


@dataclass
class Release:
    """One `helm install` of the chart in a namespace of the devcluster."""

    namespace: str
    kubectl: Callable[..., subprocess.CompletedProcess[str]]  # Cluster.kubectl
    helm_base: Sequence[str]  # helm binary + --kubeconfig
    name: str = "svcscope"
    sets: list[str] = field(default_factory=list)
    install_to_ready_s: float | None = None
    notes: str = ""  # what `helm upgrade --install` printed (NOTES.txt rendered)

    @property
    def fullname(self) -> str:
        return self.name if "svcscope" in self.name else f"{self.name}-svcscope"

    @property
    def service_account(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.fullname}"

    @property
    def cluster_role(self) -> str:
        return f"{self.namespace}-{self.fullname}"[:63].rstrip("-")

    def helm(self, *args: str, check: bool = True, timeout: float = 240.0) -> Completed:
        proc = subprocess.run(
            [*self.helm_base, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            output = proc.stderr + proc.stdout
            raise AssertionError(f"helm {' '.join(args)} exited {proc.returncode}:\n{output}")
        return proc

    def _set_args(self, sets: Sequence[str]) -> list[str]:
        return [arg for s in [*image_sets(), *sets] for arg in ("--set", s)]

    def template(self, *sets: str, values: Sequence[Path] = ()) -> list[dict[str, Any]]:
        args = ["template", self.name, str(CHART), "--namespace", self.namespace]
        args += [arg for v in values for arg in ("--values", str(v))]
        return documents(self.helm(*args, *self._set_args([*self.sets, *sets])).stdout)

    def install(self, *sets: str) -> float:
        """`helm upgrade --install` with these values, then wait for every deployment; returns the seconds."""
        self.sets = list(sets)
        started = time.monotonic()
        self.notes = self.helm(
            "upgrade", "--install", self.name, str(CHART), "--namespace", self.namespace, "--reset-values",
            *self._set_args(self.sets),
        ).stdout  # fmt: skip
        self.wait_ready()
        self.install_to_ready_s = time.monotonic() - started
        return self.install_to_ready_s

    def upgrade(self, *sets: str) -> None:
        """`helm upgrade` with exactly these values (no waiting: for RBAC-only changes)."""
        self.sets = list(sets)
        # --reset-values: with no --set at all, helm would silently reuse the previous release's values.
        args = ["upgrade", self.name, str(CHART), "--namespace", self.namespace, "--reset-values"]
        self.helm(*args, *self._set_args(self.sets))

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deployments = self.kubectl("get", "deployments", "-n", self.namespace, "-o", "name").stdout.split()
        deadline = time.monotonic() + timeout
        for deploy in deployments:
            left = max(1, int(deadline - time.monotonic()))
            proc = self.kubectl(
                "rollout", "status", "-n", self.namespace, deploy, f"--timeout={left}s",
                check=False, timeout=left + 30,
            )  # fmt: skip
            if proc.returncode != 0:
                pods = self.kubectl("get", "pods", "-n", self.namespace, "-o", "wide", check=False).stdout
                events = self.kubectl(
                    "get", "events", "-n", self.namespace, "--sort-by=.lastTimestamp", check=False
                ).stdout
                raise AssertionError(
                    f"{deploy} not Ready in {timeout:.0f} s:\n{proc.stderr}\n{pods}\n{events[-3000:]}"
                )

    def uninstall(self, *, wait: bool = True) -> None:
        args = ["uninstall", self.name, "--namespace", self.namespace]
        self.helm(*args, *(["--wait"] if wait else []), check=False)

    def can_i(self, verb: str, resource: str, *, namespace: str | None = None, subresource: str = "") -> bool:
        args = ["auth", "can-i", verb, resource, f"--as={self.service_account}"]
        args += ["--namespace", namespace] if namespace else ["--all-namespaces"]
        if subresource:
            args += ["--subresource", subresource]
        proc = self.kubectl(*args, check=False)
        answer = proc.stdout.strip()
        if answer not in ("yes", "no"):
            raise AssertionError(f"kubectl {' '.join(args)}: {proc.stdout}{proc.stderr}")
        return answer == "yes"

    def can_i_list(self, namespace: str) -> dict[str, set[str]]:
        """`kubectl auth can-i --list` in a namespace: resource (or non-resource URL) -> verbs. It shows the
        cluster-wide rules too, so a namespace where the release has no Role shows only those."""
        args = ["auth", "can-i", "--list", f"--as={self.service_account}", "--namespace", namespace]
        proc = self.kubectl(*args)
        lines = proc.stdout.splitlines()
        if not lines or not lines[0].startswith("Resources"):
            raise AssertionError(f"kubectl {' '.join(args)}: unexpected output:\n{proc.stdout}{proc.stderr}")
        granted: dict[str, set[str]] = {}
        for line in lines[1:]:
            verbs = re.search(r"\[([^\]]*)\]\s*$", line)
            if not line.strip() or verbs is None:
                continue
            first = line.split()[0]
            # A line without a resource is a non-resource URL: its name is in the second column.
            name = first if not first.startswith("[") else first.strip("[]")
            granted.setdefault(name, set()).update(verbs.group(1).split())
        return granted


def custom_cluster_ip() -> str:
    """A Service address for the demo's custom-clusterIP Service, away from 198.19.200.200 (`make demo`)."""
    return f"198.19.{random.randint(201, 250)}.{random.randint(2, 250)}"


@contextlib.contextmanager
def installed(release: Release, *sets: str) -> Iterator[Release]:
    try:
        release.install(*sets)
        yield release
    finally:
        release.uninstall(wait=False)


@contextlib.contextmanager
def port_forward(
    kubectl_base: Sequence[str], namespace: str, service: str, timeout: float = 30.0, *, local_port: int = 0
) -> Iterator[str]:
    """`kubectl port-forward svc/SERVICE :80` on 127.0.0.1 (a free port, or ``local_port``: a forward opened
    again where the last one was, as a user restarting it); yields the base URL."""
    local = str(local_port) if local_port else ""
    args = [*kubectl_base, "--namespace", namespace, "port-forward", f"svc/{service}", f"{local}:80"]
    proc = subprocess.Popen(
        [*args, "--address", "127.0.0.1"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    drain: threading.Thread | None = None
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while not line.startswith("Forwarding from 127.0.0.1:"):
            left = deadline - time.monotonic()
            readable, _, _ = select.select([proc.stdout], [], [], max(0.0, left))
            if not readable or proc.poll() is not None:
                raise AssertionError(f"kubectl port-forward did not start (exit {proc.poll()}): {line}")
            line = proc.stdout.readline()  # "Forwarding from 127.0.0.1:PORT -> 8080"
        port = int(line.split("127.0.0.1:")[1].split()[0])
        # kubectl prints a line per connection: keep reading so that a full pipe never blocks it.
        drain = threading.Thread(target=proc.stdout.read, daemon=True)
        drain.start()
        yield f"http://localhost:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if drain is not None:
            drain.join(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
