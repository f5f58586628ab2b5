"""Fixtures for tests against the real devcluster.

- `cluster` (session): brings the node up once with `python -m devcluster up` (a no-op when it is already up
  and healthy, so several sessions share one node). If it cannot come up, every test using it ERRORs with the
  output of `up`; nothing is ever skipped.
- `namespace` (function): a fresh namespace, deleted afterwards (without waiting for its pods to go).
- `deploy_echo` (function): deploys the echo backend (Deployment + Service) into a namespace and waits for it.
- `client_pod` (function): an idle pod of the echo image to `kubectl exec` clients from.
- `healthy_node` (autouse): after a failed or fault-injecting test, checks the node before the next
  test that uses it and brings it back if it is unhealthy.
- `kube_exec_in_netns` (session): runs a command inside the node's network and mount namespaces.
- `multinode_cluster` (session): a separate devcluster instance of several nodes in several zones (tests
  marked `multinode`); reused when one of that shape is up and healthy, rebuilt when its shape differs.

SVCSCOPE_E2E_PROXY_MODE=nftables runs either suite against kube-proxy in nftables mode (`up --proxy-mode`);
SVCSCOPE_DC_INSTANCE points the single-node suite at another instance than the default one.

Every wait polls a condition with a deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

REPO = Path(__file__).resolve().parents[2]
ECHO_IMAGE = "localhost/svcscope-echo:dev"
UP_TIMEOUT_S = 3600.0  # warm: seconds; a fresh machine may still build binaries (~20 min) and images here
PROXY_MODE = os.environ.get("SVCSCOPE_E2E_PROXY_MODE", "iptables")
# The multi-node tests run on an instance of their own, so they never disturb the single-node one.
MULTINODE_INSTANCE = os.environ.get("SVCSCOPE_E2E_MULTINODE_INSTANCE", "mn")
MULTINODE_SHAPE = ("--nodes", "3", "--zones", "2")  # zone-a: nodes 1 and 3, zone-b: node 2
T = TypeVar("T")


def devcluster(
    *args: str, timeout: float = 120.0, check: bool = True, instance: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m devcluster ARGS` from the repo (on another instance than the environment's if given)."""
    env = None if instance is None else {**os.environ, "SVCSCOPE_DC_INSTANCE": instance}
    proc = subprocess.run(
        [sys.executable, "-m", "devcluster", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"devcluster {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def wait_for(condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll `condition` until it returns something truthy (returned); exceptions count as "not yet"."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = condition()
            if value:
                return value
            last = value
        except Exception as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last: {last!r}")
        time.sleep(interval)


@dataclass
class Cluster:
    """The running devcluster, seen from the host."""

    kubeconfig: Path
    bin_dir: Path
    instance: str | None = None  # None: the environment's (SVCSCOPE_DC_INSTANCE or the default)

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}{proc.stdout}"
            )
        return proc

    def get(self, *args: str) -> Any:
        """`kubectl get ARGS -o json`, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply(self, yaml_text: str, namespace: str | None = None) -> None:
        ns = [f"--namespace={namespace}"] if namespace else []
        self.kubectl("apply", *ns, "-f", "-", input=textwrap.dedent(yaml_text))

    def wait_for(self, condition: Callable[[], T], timeout: float, what: str) -> T:
        return wait_for(condition, timeout, what)

    def exec_in_netns(
        self, *cmd: str, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the node's network and mount namespaces (`python -m devcluster exec`)."""
        return devcluster("exec", "--", *cmd, check=check, timeout=timeout, instance=self.instance)

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get("pods", "-n", namespace, "-l", selector)["items"]
        return items

    def create_namespace(self, name: str, timeout: float = 30.0) -> None:
        """Create a namespace and wait for its default ServiceAccount: admission rejects pods until then."""
        self.kubectl("create", "namespace", name)
        self.wait_for(
            lambda: self.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
            timeout,
            f"default ServiceAccount in {name}",
        )

    def ready_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return [pod for pod in self.pods(namespace, selector) if _pod_ready(pod)]


def _pod_ready(pod: dict[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


_up_result: dict[str, subprocess.CompletedProcess[str]] = {}  # `up` as run by pytest_collection_finish


def _up_single() -> subprocess.CompletedProcess[str]:
    return devcluster("up", "--proxy-mode", PROXY_MODE, timeout=UP_TIMEOUT_S, check=False)


def _up_multinode() -> subprocess.CompletedProcess[str]:
    """The multi-node instance in its shape: reused when healthy, rebuilt when another shape runs."""
    args = ("up", *MULTINODE_SHAPE, "--proxy-mode", PROXY_MODE)
    proc = devcluster(*args, timeout=UP_TIMEOUT_S, check=False, instance=MULTINODE_INSTANCE)
    if proc.returncode != 0 and "run `python -m devcluster down` first" in proc.stderr:
        devcluster("down", timeout=300, check=False, instance=MULTINODE_INSTANCE)
        proc = devcluster(*args, timeout=UP_TIMEOUT_S, check=False, instance=MULTINODE_INSTANCE)
    return proc


def pytest_collection_finish(session: pytest.Session) -> None:
    # Bring the clusters up here, before the first test: a hook is not bound by the per-test timeout, and a
    # machine that still has to import or build images needs longer than one test may take. Only the
    # clusters that the selected tests use: `-m multinode` never touches the single-node instance.
    if session.config.option.collectonly:
        return
    # Only e2e tests count: unit tests have fixtures of their own named "cluster" (in-process fakes).
    e2e = [i for i in session.items if i.get_closest_marker("e2e") is not None]
    if any("cluster" in getattr(i, "fixturenames", ()) for i in e2e):
        _up_result["single"] = _up_single()
    if any("multinode_cluster" in getattr(i, "fixturenames", ()) for i in e2e):
        _up_result["multinode"] = _up_multinode()


def _cluster_from(proc: subprocess.CompletedProcess[str], instance: str | None) -> Cluster:
    if proc.returncode != 0:
        # pytest.fail, never skip: an e2e run without a cluster must not look green.
        pytest.fail(
            f"the devcluster did not come up (exit {proc.returncode}):\n{proc.stderr[-6000:]}", pytrace=False
        )
    env = dict(
        line.removeprefix("export ").split("=", 1)
        for line in devcluster("env", instance=instance).stdout.splitlines()
        if "=" in line
    )
    bin_dir = Path(env["PATH"].split(":", 1)[0])
    return Cluster(kubeconfig=Path(env["KUBECONFIG"]), bin_dir=bin_dir, instance=instance)


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    return _cluster_from(_up_result.get("single") or _up_single(), None)


# After a test that failed or disturbed the node on purpose, the next test that uses the single-node cluster
# first makes sure it is healthy, and brings it back if not: one broken component must fail one test, not
# every test after it.
_node_check_due: list[str] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    uses_node = "cluster" in getattr(item, "fixturenames", ())
    if uses_node and report.when == "call" and (report.failed or item.get_closest_marker("faults")):
        _node_check_due[:] = [item.nodeid]
    return report


@pytest.fixture(autouse=True)
def healthy_node(request: pytest.FixtureRequest) -> None:
    if not _node_check_due or "cluster" not in request.fixturenames:
        return
    after = _node_check_due.pop()
    if devcluster("status", check=False).returncode == 0:
        return
    proc = _up_single()
    if proc.returncode != 0:
        pytest.fail(
            f"the devcluster was unhealthy after {after} and did not come back (exit {proc.returncode}):\n"
            f"{proc.stderr[-4000:]}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def multinode_cluster() -> Cluster:
    return _cluster_from(_up_result.get("multinode") or _up_multinode(), MULTINODE_INSTANCE)


@pytest.fixture(scope="session")
def kube_exec_in_netns(cluster: Cluster) -> Callable[..., subprocess.CompletedProcess[str]]:
    return cluster.exec_in_netns


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].rstrip("-")
    name = f"e2e-{base}-{uuid.uuid4().hex[:5]}"
    cluster.create_namespace(name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@dataclass
class EchoApp:
    """An echo Deployment and its Service, ready."""

    name: str
    namespace: str
    selector: str
    service: dict[str, Any] = field(default_factory=dict)

    @property
    def cluster_ip(self) -> str:
        return str(self.service["spec"]["clusterIP"])


def echo_deployment(
    name: str,
    *,
    replicas: int = 3,
    env: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    pod_spec: str = "",
) -> str:
    """YAML of an echo Deployment: pods labelled app=NAME (plus `labels`); `pod_spec` adds lines to the pod
    template's spec (placement, lifecycle), at the indentation of `containers:`."""
    extra_env = "".join(
        f"\n            - {{name: {k}, value: {json.dumps(v)}}}" for k, v in (env or {}).items()
    )
    pod_labels = ", ".join(f"{k}: {v}" for k, v in {"app": name, **(labels or {})}.items())
    extra_spec = "".join(f"      {line}\n" for line in textwrap.dedent(pod_spec).strip().splitlines())
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{{pod_labels}}}
    spec:
      terminationGracePeriodSeconds: 1
      enableServiceLinks: false
{extra_spec}\
      containers:
        - name: echo
          image: {ECHO_IMAGE}
          imagePullPolicy: Never
          ports:
            - {{name: http, containerPort: 8080, protocol: TCP}}
            - {{name: tcp, containerPort: 9000, protocol: TCP}}
            - {{name: udp, containerPort: 9001, protocol: UDP}}
          env:
            - name: POD_NAME
              valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
            - name: POD_IP
              valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}
            - name: NODE_NAME
              valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}{extra_env}
          readinessProbe:
            tcpSocket: {{port: 8080}}
            periodSeconds: 1
"""


def echo_manifest(
    name: str,
    *,
    replicas: int = 3,
    service_spec: str = "",
    ports: str = "",
    env: dict[str, str] | None = None,
) -> str:
    """YAML of an echo Deployment and its Service.

    `ports` replaces the default Service ports (http 80 -> named targetPort http, tcp 9000, udp 9001);
    `service_spec` adds lines to the Service's spec (e.g. "sessionAffinity: ClientIP").
    """
    ports = (
        ports
        or """\
    - {name: http, port: 80, targetPort: http, protocol: TCP}
    - {name: tcp, port: 9000, targetPort: tcp, protocol: TCP}
    - {name: udp, port: 9001, targetPort: udp, protocol: UDP}"""
    )
    deployment = echo_deployment(name, replicas=replicas, env=env)
    spec_lines = "".join(f"  {line}\n" for line in textwrap.dedent(service_spec).strip().splitlines())
    service = f"""\
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector: {{app: {name}}}
{spec_lines}\
  ports:
{ports}
"""
    return deployment + service


def deploy_echo_app(
    cluster: Cluster,
    namespace: str,
    name: str = "echo",
    *,
    replicas: int = 3,
    service_spec: str = "",
    ports: str = "",
    env: dict[str, str] | None = None,
    timeout: float = 90.0,
) -> EchoApp:
    """Deploy echo + Service; wait until all replicas are Ready and listed in the Service's EndpointSlices."""
    cluster.apply(
        echo_manifest(name, replicas=replicas, service_spec=service_spec, ports=ports, env=env), namespace
    )
    selector = f"app={name}"
    cluster.wait_for(
        lambda: len(cluster.ready_pods(namespace, selector)) == replicas,
        timeout,
        f"{replicas} Ready {name} pods",
    )

    def endpoints_ready() -> bool:
        slices = cluster.get("endpointslices", "-n", namespace, "-l", f"kubernetes.io/service-name={name}")
        ready = {
            addr
            for s in slices["items"]
            for ep in s.get("endpoints") or []
            if ep.get("conditions", {}).get("ready")
            for addr in ep["addresses"]
        }
        return len(ready) == replicas

    cluster.wait_for(endpoints_ready, timeout, f"{replicas} ready endpoints of Service {name}")
    return EchoApp(name, namespace, selector, cluster.get("service", name, "-n", namespace))


@pytest.fixture
def deploy_echo(cluster: Cluster) -> Callable[..., EchoApp]:
    """`deploy_echo(namespace, name="echo", replicas=3, service_spec="", ports="", env=None) -> EchoApp`."""

    def deploy(namespace: str, name: str = "echo", **kwargs: Any) -> EchoApp:
        return deploy_echo_app(cluster, namespace, name, **kwargs)

    return deploy


def start_client_pod(
    cluster: Cluster,
    namespace: str,
    name: str = "client",
    timeout: float = 60.0,
    node: str | None = None,
    image: str = ECHO_IMAGE,
    command: str
    | None = """[python3, -u, -c, "import time; print('e2e client ready'); time.sleep(86400)"]""",
) -> str:
    """An idle pod of the echo image (or ``image``; no echo Service selects it) to exec clients in, on `node`
    if given; returns its name. ``command=None`` keeps the image's entrypoint (for images without python3)."""
    placement = f"nodeSelector: {{kubernetes.io/hostname: {node}}}" if node else ""
    command_line = f"command: {command}" if command else ""
    cluster.apply(
        f"""\
        apiVersion: v1
        kind: Pod
        metadata:
          name: {name}
          labels: {{role: e2e-client}}
        spec:
          {placement}
          terminationGracePeriodSeconds: 0
          enableServiceLinks: false
          containers:
            - name: client
              image: {image}
              imagePullPolicy: Never
              {command_line}
        """,
        namespace,
    )
    cluster.wait_for(
        lambda: _pod_ready(cluster.get("pod", name, "-n", namespace)),
        timeout,
        f"client pod {namespace}/{name}",
    )
    return name


@pytest.fixture
def client_pod(cluster: Cluster, namespace: str) -> str:
    return start_client_pod(cluster, namespace)


# Connects to argv[1]:argv[2] and prints what the server says first (the echo's TCP banner `pod=... ip=...`).
TCP_BANNER_SCRIPT = (
    "import socket, sys\n"
    "s = socket.create_connection((sys.argv[1], int(sys.argv[2])), 3)\n"
    "print(s.recv(200).decode())"
)


def run_echo_client(
    cluster: Cluster, namespace: str, pod: str, *client_args: str, timeout: float = 120.0
) -> list[str]:
    """`python3 -m app.echo client ARGS` inside `pod`; returns its output lines (pod names, `ERROR kind`)."""
    proc = cluster.kubectl(
        "exec",
        "-n",
        namespace,
        pod,
        "--",
        "python3",
        "-m",
        "app.echo",
        "client",
        *client_args,
        timeout=timeout,
    )
    return proc.stdout.split()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every test here is e2e, and the lifecycle tests (down, then up again; the multi-node one's down) must
    # run after all the others of their cluster.
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.e2e)
    last = [item for item in items if "test_devcluster_lifecycle" in str(item.fspath)]
    items[:] = [item for item in items if item not in last] + last
