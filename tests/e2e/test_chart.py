"""The chart against the real devcluster: server-side dry run, install with the image built from the
project's Dockerfile, hardened pod that becomes Ready, least-privilege RBAC, clean uninstall."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts import demo
from tests.chart.helmtool import VALUES_DIR, by_kind
from tests.chart.release import Release, custom_cluster_ip, port_forward
from tests.e2e.conftest import Cluster, wait_for
from tests.e2e.released import chart_release

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
RBAC_SETTLE_S = 30.0  # the RBAC authorizer reads from an informer: a new rule shows up within moments


@pytest.fixture(scope="module")
def image(cluster: Cluster) -> str:
    demo.build_image()
    return demo.IMAGE


@pytest.fixture
def release(cluster: Cluster, namespace: str) -> Iterator[Release]:
    rel = chart_release(cluster, namespace)
    yield rel
    rel.uninstall(wait=False)  # the ClusterRole(Binding) outlive the namespace otherwise


def _record(name: str, value: object) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "chart-e2e.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = value
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _dashboard_pod(cluster: Cluster, rel: Release) -> dict[str, Any]:
    selector = f"app.kubernetes.io/name=svcscope,app.kubernetes.io/instance={rel.name}"
    (pod,) = cluster.ready_pods(rel.namespace, selector)
    return pod


@pytest.mark.parametrize("case", ["defaults", "namespaced-rbac", "all-features", "demo"])
def test_server_side_dry_run(release: Release, case: str) -> None:
    """The apiserver (admission, validation, defaulting) accepts every rendered object."""
    # Roles can only be created in namespaces that exist: the test's own stands in for the listed ones.
    sets = [f"demo.customClusterIP={custom_cluster_ip()}", f"rbac.writableNamespaces={{{release.namespace}}}"]
    if case == "namespaced-rbac":
        sets.append(f"rbac.namespaces={{{release.namespace}}}")
    rendered = release.helm(
        "template", release.name, str(demo.CHART), "--namespace", release.namespace,
        "--values", str(VALUES_DIR / f"{case}.yaml"), *[a for s in sets for a in ("--set", s)],
    ).stdout  # fmt: skip
    proc = release.kubectl(
        "apply", "--dry-run=server", "--namespace", release.namespace, "-o", "name", "-f", "-",
        input=rendered, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.split()) >= 5
    # Nothing was created.
    assert not release.kubectl("get", "deployments", "-n", release.namespace, "-o", "name").stdout.strip()


def test_installed_pod_is_non_root_read_only_and_ready(cluster: Cluster, release: Release) -> None:
    seconds = release.install("demo.enabled=true", f"demo.customClusterIP={custom_cluster_ip()}")
    _record("install_to_ready_s", round(seconds, 1))
    command = f"kubectl --namespace {release.namespace} port-forward svc/svcscope 8080:80"
    assert command in release.notes, release.notes
    pod = _dashboard_pod(cluster, release)
    (container,) = pod["spec"]["containers"]
    assert container["image"] == demo.IMAGE
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    (status,) = pod["status"]["containerStatuses"]
    assert status["ready"] is True and status["restartCount"] == 0

    # What the process really gets, seen from inside the running container.
    probe = (
        "import os, errno\n"
        "print(os.getuid(), os.getgid())\n"
        "try:\n"
        "    open('/app/written', 'w')\n"
        "    print('root-fs-writable')\n"
        "except OSError as e:\n"
        "    print('root-fs', errno.errorcode[e.errno])\n"
        "open('/tmp/written', 'w').write('x')\n"
        "print('tmp-ok')\n"
        "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])\n"
    )
    out = release.kubectl(
        "exec", "-n", release.namespace, pod["metadata"]["name"], "--", "python", "-c", probe
    ).stdout.split("\n")
    assert out[0] == "10001 10001"
    assert out[1] == "root-fs EROFS"
    assert out[2] == "tmp-ok"
    assert out[3] == "0000000000000000"  # no capabilities at all

    # The echo backends run from the same image, as the same unprivileged user.
    echo_pods = cluster.ready_pods(release.namespace, "app.kubernetes.io/name=svcscope-echo")
    assert len(echo_pods) == 3
    for echo in echo_pods:
        assert echo["spec"]["containers"][0]["image"] == demo.IMAGE
        assert echo["spec"]["securityContext"]["runAsUser"] == 10001


def test_port_forward_reaches_the_dashboard(cluster: Cluster, release: Release) -> None:
    """What a user does: `kubectl port-forward svc/svcscope`; the health endpoints answer on localhost."""
    release.install()
    kubectl = [str(cluster.bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}"]
    with port_forward(kubectl, release.namespace, release.fullname) as url:
        for path in ("/healthz", "/readyz"):
            with urllib.request.urlopen(f"{url}{path}", timeout=10) as resp:  # loopback
                assert resp.status == 200


def test_shutdown_is_graceful_with_an_open_stream(cluster: Cluster, release: Release) -> None:
    """SIGTERM with a live SSE stream open: uvicorn's --timeout-graceful-shutdown (10 s) ends it well before
    the kubelet's terminationGracePeriodSeconds (20 s) would SIGKILL it."""
    release.install()
    pod = _dashboard_pod(cluster, release)["metadata"]["name"]
    kubectl = [str(cluster.bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}"]
    with port_forward(kubectl, release.namespace, release.fullname) as url:
        stream = urllib.request.urlopen(f"{url}/streams/services", timeout=30)  # loopback
        try:
            assert stream.status == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert stream.readline()  # the stream is live
            started = time.monotonic()
            release.kubectl("delete", "pod", "-n", release.namespace, pod, "--wait=true", "--timeout=60s")
            took = time.monotonic() - started
        finally:
            stream.close()
    _record("delete_pod_with_open_stream_s", round(took, 1))
    assert took < 18, f"deleting the pod took {took:.1f} s: the graceful shutdown did not end in time"


# (verb, resource, subresource, namespace); namespace None: cluster-wide (`--all-namespaces`).
Access = tuple[str, str, str, str | None]


def _assert_access(rel: Release, expected: dict[Access, bool]) -> None:
    def ask(key: Access) -> bool:
        return rel.can_i(key[0], key[1], subresource=key[2], namespace=key[3])

    def actual() -> dict[Access, bool]:
        # One kubectl per question: asked side by side, or a few dozen of them take most of a minute.
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            return dict(zip(expected, pool.map(ask, expected), strict=True))

    deadline = time.monotonic() + RBAC_SETTLE_S
    while (got := actual()) != expected and time.monotonic() < deadline:
        time.sleep(0.5)  # polling the authorizer until the new rules show, bounded by the deadline
    wrong = {f"{verb} {res}{'/' + sub if sub else ''} in {ns or 'all namespaces'}": got[(verb, res, sub, ns)]
             for (verb, res, sub, ns), want in expected.items()
             if got[(verb, res, sub, ns)] != want}  # fmt: skip
    assert not wrong, f"can-i answers that differ from the chart's intent (actual shown): {wrong}"


# Nodes are read (rbac.readNodes, on by default) for their zones: what each node's kube-proxy picks.
READ = [(verb, res, "") for verb in ("get", "list", "watch")
        for res in ("services", "pods", "endpointslices.discovery.k8s.io", "nodes")]  # fmt: skip
NEVER = [
    ("get", "secrets", ""),
    ("list", "secrets", ""),
    ("watch", "secrets", ""),
    ("list", "configmaps", ""),
    ("create", "services", ""),
    ("delete", "services", ""),
    ("update", "services", ""),
    ("update", "nodes", ""),
    ("get", "nodes", "proxy"),
    ("create", "serviceaccounts", "token"),
    ("impersonate", "serviceaccounts", ""),
]
# What each value grants, and where: "writable" (each of rbac.writableNamespaces) or "release".
WRITES: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "rbac.patchServices": ("writable", [("patch", "services", ""), ("create", "events", "")]),
    # Both: a websocket exec is authorized as get (and by newer apiservers also as create).
    "rbac.exec": ("writable", [("get", "pods", "exec"), ("create", "pods", "exec")]),
    "rbac.probePods": ("release", [("create", "pods", ""), ("delete", "pods", ""), ("get", "pods", "log")]),
}
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "escalate", "bind", "impersonate"}
# Granted to every authenticated user by the cluster's own system:basic-user ClusterRole, not by the chart.
SELF_REVIEWS = {
    "selfsubjectreviews.authentication.k8s.io",
    "selfsubjectaccessreviews.authorization.k8s.io",
    "selfsubjectrulesreviews.authorization.k8s.io",
}


def _writes_listed(rel: Release, namespace: str) -> dict[str, set[str]]:
    """Write verbs that `kubectl auth can-i --list` shows for the ServiceAccount in a namespace."""
    listed = rel.can_i_list(namespace)
    return {
        res: verbs & WRITE_VERBS
        for res, verbs in listed.items()
        if verbs & WRITE_VERBS and res not in SELF_REVIEWS
    }


def _expected_access(rel: Release, flags: tuple[str, ...], writable: str) -> dict[Access, bool]:
    """Reads everywhere; each value's writes in its own place only; never in kube-system or default."""
    expected: dict[Access, bool] = {(*key, None): True for key in READ}
    expected |= {(*key, ns): False for key in NEVER for ns in (None, writable)}
    for flag, (where, grants) in WRITES.items():
        place = writable if where == "writable" else rel.namespace
        elsewhere = rel.namespace if where == "writable" else writable
        for grant in grants:
            expected[(*grant, place)] = flag in flags
            for ns in (None, elsewhere, "kube-system", "default"):
                expected[(*grant, ns)] = False
    return expected


def test_rbac_is_least_privilege(cluster: Cluster, release: Release, namespace: str) -> None:
    """Read-only by default. Each write value grants its verbs only where it should (Services and exec in the
    writable namespace, probe pods in the release namespace), never cluster-wide, never in kube-system."""
    writable = f"{namespace}-w"[:63]
    cluster.kubectl("create", "namespace", writable)
    try:
        release.install(f"rbac.writableNamespaces={{{writable}}}")
        for flags in [(), *[(flag,) for flag in WRITES], tuple(WRITES)]:
            release.upgrade(f"rbac.writableNamespaces={{{writable}}}", *[f"{flag}=true" for flag in flags])
            _assert_access(release, _expected_access(release, flags, writable))
            # The whole list, as a reviewer would check it: no write verb outside the chart's Roles.
            assert _writes_listed(release, "kube-system") == {}, flags
            assert _writes_listed(release, "default") == {}, flags
            assert _writes_listed(release, writable) == {
                **({"services": {"patch"}, "events": {"create"}} if "rbac.patchServices" in flags else {}),
                **({"pods/exec": {"create"}} if "rbac.exec" in flags else {}),
            }, flags
            assert _writes_listed(release, release.namespace) == (
                {"pods": {"create", "delete"}} if "rbac.probePods" in flags else {}
            ), flags
    finally:
        cluster.kubectl("delete", "namespace", writable, "--wait=false", check=False)


def test_namespaced_rbac_reaches_only_its_namespaces(cluster: Cluster, release: Release) -> None:
    release.install(f"rbac.namespaces={{{release.namespace}}}")
    assert release.can_i("list", "services", namespace=release.namespace)
    assert release.can_i("watch", "endpointslices.discovery.k8s.io", namespace=release.namespace)
    assert not release.can_i("list", "services", namespace="default")
    assert not release.can_i("list", "services")  # cluster-wide
    assert not release.kubectl("get", "clusterrole", release.cluster_role, check=False).returncode == 0
    pod = _dashboard_pod(cluster, release)
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["SVCSCOPE_NAMESPACES"] == release.namespace


def test_csrf_key_is_kept_across_upgrades_and_restarts(cluster: Cluster, release: Release) -> None:
    """The chart generates the CSRF key once and reuses it on upgrade (`lookup`); the restarted pod signs with
    the same key, so a page open in the browser keeps working."""
    release.install()

    def installed_key() -> str:
        secret = cluster.get("secret", f"{release.fullname}-csrf", "-n", release.namespace)
        return base64.b64decode(secret["data"]["csrf-secret"]).decode()

    def key_in_pod() -> str:
        pod = _dashboard_pod(cluster, release)["metadata"]["name"]
        args = ["exec", "-n", release.namespace, pod, "--", "printenv", "SVCSCOPE_CSRF_SECRET"]
        return release.kubectl(*args).stdout.strip()

    first = installed_key()
    assert len(first) == 48 and key_in_pod() == first
    # A change of the pod template: the Deployment replaces the pod.
    old_pod = _dashboard_pod(cluster, release)["metadata"]["uid"]
    release.upgrade("config.allowedHosts={dashboard.internal}")
    release.wait_ready()
    wait_for(lambda: _dashboard_pod(cluster, release)["metadata"]["uid"] != old_pod, 120, "the new pod")
    assert installed_key() == first
    assert key_in_pod() == first


def test_uninstall_leaves_nothing_behind(cluster: Cluster, release: Release) -> None:
    release.install("demo.enabled=true", f"demo.customClusterIP={custom_cluster_ip()}")
    docs = release.template("demo.enabled=true")
    assert by_kind(docs, "ClusterRole")
    release.uninstall(wait=True)
    ns = release.namespace

    wait_for(
        lambda: not cluster.get("pods", "-n", ns)["items"], 120, f"the pods of {ns} to be gone"
    )  # fmt: skip
    kinds = cluster.kubectl("api-resources", "--verbs=list", "--namespaced", "-o", "name").stdout.split()
    kinds = [k for k in kinds if k not in ("events", "events.events.k8s.io")]
    left = cluster.get(",".join(kinds), "-n", ns)["items"]
    leftovers = [
        f"{item['kind']}/{item['metadata']['name']}"
        for item in left
        if (item["kind"], item["metadata"]["name"]) not in {("ServiceAccount", "default"),
                                                            ("ConfigMap", "kube-root-ca.crt")}
    ]  # fmt: skip
    assert not leftovers, f"left in {ns} after helm uninstall: {leftovers}"
    for kind in ("clusterrole", "clusterrolebinding"):
        proc = cluster.kubectl("get", kind, release.cluster_role, check=False)
        assert proc.returncode != 0 and "NotFound" in proc.stderr
    labelled = cluster.get("clusterroles,clusterrolebindings", "-l", "app.kubernetes.io/part-of=svcscope")
    assert not [i for i in labelled["items"] if i["metadata"]["name"].startswith(f"{ns}-")]


def test_image_size_is_recorded(image: str) -> None:
    from devcluster import images

    tarballs = sorted(images.IMAGE_CACHE.glob("svcscope_dev-*.tar"), key=lambda p: p.stat().st_mtime)
    assert tarballs, f"no tarball of {image} in {images.IMAGE_CACHE}"
    size_mib = tarballs[-1].stat().st_size / 2**20
    _record("image_tarball_mib", round(size_mib, 1))
    assert size_mib < 400, f"the image tarball is {size_mib:.0f} MiB"
