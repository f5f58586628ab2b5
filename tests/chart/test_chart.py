"""Semantic checks of the rendered chart: least-privilege RBAC, hardened pods, demo workloads, schema."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.chart.helmtool import CHART, VALUES_DIR, by_kind, documents, render, run_helm

READ_ONLY = {"get", "list", "watch"}
OPTIONAL_RULES: dict[str, list[dict[str, Any]]] = {
    "rbac.exec": [{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}],
    "rbac.probePods": [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "delete"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    ],
    "rbac.patchServices": [{"apiGroups": [""], "resources": ["services"], "verbs": ["patch"]}],
}
SUBJECTS = [{"kind": "ServiceAccount", "name": "svcscope", "namespace": "svcscope"}]
BASE_RULES = [
    {"apiGroups": [""], "resources": ["services", "pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
]


def _docs(helm: Path, *sets: str, values: str | None = None) -> list[dict[str, Any]]:
    files = [VALUES_DIR / f"{values}.yaml"] if values else []
    return documents(render(helm, files, sets))


def _granted(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _role_rules(docs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [d["rules"] for d in docs if d["kind"] in ("ClusterRole", "Role")]


def _pod_specs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d["spec"]["template"]["spec"] for d in by_kind(docs, "Deployment")]


def _dashboard(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deploy,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "svcscope"]
    return deploy


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# -- RBAC


def test_default_rbac_is_cluster_wide_and_read_only(helm: Path) -> None:
    docs = _docs(helm)
    assert {d["kind"] for d in docs} == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Service",
        "Deployment",
    }
    (role,) = by_kind(docs, "ClusterRole")
    assert role["rules"] == BASE_RULES
    assert {verb for _, _, verb in _granted(role["rules"])} == READ_ONLY
    (binding,) = by_kind(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == SUBJECTS


@pytest.mark.parametrize("values", [None, "namespaced-rbac", "all-features", "demo"])
def test_no_secrets_no_wildcards_no_escalation(helm: Path, values: str | None) -> None:
    docs = _docs(helm, values=values)
    for rules in _role_rules(docs):
        for group, resource, verb in _granted(rules):
            assert "*" not in (group, resource, verb)
            assert resource not in ("secrets", "configmaps", "serviceaccounts/token", "nodes/proxy")
            assert verb not in ("escalate", "bind", "impersonate", "update", "deletecollection")
    assert not by_kind(docs, "Secret")


def test_no_exec_by_default(helm: Path) -> None:
    for rules in _role_rules(_docs(helm)):
        assert not {r for r in _granted(rules) if r[1] in ("pods/exec", "pods/log", "pods/attach")}


@pytest.mark.parametrize("flag", sorted(OPTIONAL_RULES))
def test_each_optional_verb_only_with_its_value(helm: Path, flag: str) -> None:
    (role,) = by_kind(_docs(helm, f"{flag}=true"), "ClusterRole")
    assert role["rules"] == BASE_RULES + OPTIONAL_RULES[flag]


def test_namespaced_rbac_makes_roles_and_scopes_the_app(helm: Path) -> None:
    docs = _docs(helm, values="namespaced-rbac")
    assert not by_kind(docs, "ClusterRole")
    assert not by_kind(docs, "ClusterRoleBinding")
    roles = by_kind(docs, "Role")
    bindings = by_kind(docs, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for role in roles:
        assert role["rules"] == BASE_RULES
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == SUBJECTS
    container = _dashboard(docs)["spec"]["template"]["spec"]["containers"][0]
    assert _env(container)["SVCSCOPE_NAMESPACES"] == "team-a,team-b"


def test_cluster_wide_app_has_no_namespace_filter(helm: Path) -> None:
    container = _dashboard(_docs(helm))["spec"]["template"]["spec"]["containers"][0]
    assert "SVCSCOPE_NAMESPACES" not in _env(container)


def test_rbac_can_be_left_to_the_user(helm: Path) -> None:
    docs = _docs(helm, "rbac.create=false", "serviceAccount.create=false", "serviceAccount.name=existing")
    assert not _role_rules(docs)
    assert not by_kind(docs, "ServiceAccount")
    assert _pod_specs(docs)[0]["serviceAccountName"] == "existing"


# -- The pods


@pytest.mark.parametrize("values", [None, "demo", "all-features"])
def test_every_pod_is_hardened(helm: Path, values: str | None) -> None:
    specs = _pod_specs(_docs(helm, values=values))
    assert specs
    for spec in specs:
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True
        assert pod_sc["runAsUser"] == 10001
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True
            assert sc["runAsUser"] == 10001
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert "privileged" not in sc
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")


def test_dashboard_pod(helm: Path) -> None:
    deploy = _dashboard(_docs(helm))
    assert deploy["spec"]["replicas"] == 1
    spec = deploy["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is True
    assert spec["serviceAccountName"] == "svcscope"
    (container,) = spec["containers"]
    assert container["image"] == "localhost/svcscope:dev"
    assert container["imagePullPolicy"] == "Never"
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    host = [{"name": "Host", "value": "localhost"}]  # the app refuses the pod IP as Host
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http", "httpHeaders": host}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http", "httpHeaders": host}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in spec["volumes"]
    args = container["args"]
    assert args[:5] == ["python", "-m", "uvicorn", "--factory", "app.main:create_app"]
    assert "--no-proxy-headers" in args
    graceful = int(args[args.index("--timeout-graceful-shutdown") + 1])
    assert spec["terminationGracePeriodSeconds"] >= graceful + 5


def test_service_account_token_only_where_needed(helm: Path) -> None:
    docs = _docs(helm, values="demo")
    (sa,) = by_kind(docs, "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    for deploy in by_kind(docs, "Deployment"):
        expected = deploy["metadata"]["name"] == "svcscope"
        assert deploy["spec"]["template"]["spec"]["automountServiceAccountToken"] is expected


def test_dashboard_service(helm: Path) -> None:
    (svc,) = by_kind(_docs(helm), "Service")
    assert svc["metadata"]["name"] == "svcscope"
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert svc["spec"]["selector"] == _dashboard(_docs(helm))["spec"]["selector"]["matchLabels"]


def test_allowed_hosts_reach_the_app(helm: Path) -> None:
    container = _dashboard(_docs(helm, values="all-features"))["spec"]["template"]["spec"]["containers"][0]
    assert _env(container)["SVCSCOPE_ALLOWED_HOSTS"] == "svcscope.example.test,dashboard.internal"
    assert _env(container)["SVCSCOPE_PAGE_SIZE"] == "100"


@pytest.mark.parametrize(
    ("sets", "origins"),
    [
        ((), None),
        (("rbac.patchServices=true",), None),
        (("rbac.probePods=true",), "probe-pod"),
        (("rbac.exec=true",), "exec"),
        (("rbac.probePods=true", "rbac.exec=true"), "probe-pod,exec"),
    ],
)
def test_probe_origins_follow_their_rbac_verbs(
    helm: Path, sets: tuple[str, ...], origins: str | None
) -> None:
    container = _dashboard(_docs(helm, *sets))["spec"]["template"]["spec"]["containers"][0]
    env = _env(container)
    assert env.get("SVCSCOPE_PROBE_ORIGINS") == origins
    if origins:  # the probe pod runs the chart's own image (it carries the echo client)
        assert env["SVCSCOPE_PROBE_POD_IMAGE"] == container["image"]
    else:
        assert "SVCSCOPE_PROBE_POD_IMAGE" not in env


@pytest.mark.parametrize(
    ("sets", "allowed"),
    [((), False), (("rbac.patchServices=true",), True), (("rbac.exec=true", "rbac.probePods=true"), False)],
)
def test_affinity_patch_follows_the_patch_verb(helm: Path, sets: tuple[str, ...], allowed: bool) -> None:
    """The app offers the affinity toggle exactly when the chart grants patch on services."""
    docs = _docs(helm, *sets)
    env = _env(_dashboard(docs)["spec"]["template"]["spec"]["containers"][0])
    granted = any(("", "services", "patch") in _granted(rules) for rules in _role_rules(docs))
    assert granted is allowed
    assert env.get("SVCSCOPE_ALLOW_AFFINITY_PATCH") == ("true" if allowed else None)
    assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}


def test_grace_period_must_cover_graceful_shutdown(helm: Path) -> None:
    proc = run_helm(
        helm,
        ["template", "x", str(CHART), "--set", "server.gracefulShutdownSeconds=30"],
        check=False,
    )
    assert proc.returncode != 0
    assert "terminationGracePeriodSeconds" in proc.stderr


# -- Demo workloads


def test_demo_is_off_by_default(helm: Path) -> None:
    assert len(by_kind(_docs(helm), "Deployment")) == 1


def test_demo_workloads(helm: Path) -> None:
    docs = _docs(helm, values="demo")
    (echo,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "svcscope-echo"]
    assert echo["spec"]["replicas"] == 3
    (container,) = echo["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "localhost/svcscope:dev"
    assert container["command"] == ["python", "-m", "app.echo", "serve"]
    env = _env(container)
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert {(p["name"], p["containerPort"], p["protocol"]) for p in container["ports"]} == {
        ("http", 8080, "TCP"),
        ("tcp", 9000, "TCP"),
        ("udp", 9001, "UDP"),
    }
    echo_labels = echo["spec"]["template"]["metadata"]["labels"]
    dashboard_labels = _dashboard(docs)["spec"]["template"]["metadata"]["labels"]

    services = {s["metadata"]["name"]: s["spec"] for s in by_kind(docs, "Service")}
    assert set(services) == {
        "svcscope",
        "svcscope-echo",
        "svcscope-echo-affinity",
        "svcscope-echo-multiport",
        "svcscope-echo-headless",
        "svcscope-echo-fixed-ip",
        "svcscope-no-endpoints",
    }

    def selects(spec: dict[str, Any], labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in spec["selector"].items())

    for name, spec in services.items():
        if name == "svcscope":
            assert not selects(spec, echo_labels)
        elif name == "svcscope-no-endpoints":
            assert not selects(spec, echo_labels) and not selects(spec, dashboard_labels)
        else:
            assert selects(spec, echo_labels) and not selects(spec, dashboard_labels)
    assert "sessionAffinity" not in services["svcscope-echo"]
    assert services["svcscope-echo-affinity"]["sessionAffinity"] == "ClientIP"
    affinity = services["svcscope-echo-affinity"]["sessionAffinityConfig"]
    assert affinity == {"clientIP": {"timeoutSeconds": 600}}
    assert services["svcscope-echo-multiport"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
        {"name": "tcp", "port": 9000, "targetPort": "tcp", "protocol": "TCP"},
        {"name": "udp", "port": 9001, "targetPort": "udp", "protocol": "UDP"},
    ]
    assert services["svcscope-echo-headless"]["clusterIP"] == "None"
    assert services["svcscope-echo-fixed-ip"]["clusterIP"] == "198.19.200.200"


def test_demo_custom_cluster_ip_is_a_value(helm: Path) -> None:
    docs = _docs(helm, "demo.enabled=true", "demo.customClusterIP=10.96.200.200")
    (fixed,) = [s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "svcscope-echo-fixed-ip"]
    assert fixed["spec"]["clusterIP"] == "10.96.200.200"
    docs = _docs(helm, "demo.enabled=true", "demo.customClusterIP=")
    assert "svcscope-echo-fixed-ip" not in {s["metadata"]["name"] for s in by_kind(docs, "Service")}


# -- Schema, docs, lint


@pytest.mark.parametrize(
    "bad",
    [
        "image.pullPolicy=Sometimes",
        "rbac.exec=yes",
        "rbac.namespaces[0]=Not_A_Namespace",
        "demo.customClusterIP=not-an-ip",
        "service.port=70000",
        "unknownValue=1",
        "rbac.secrets=true",
    ],
)
def test_schema_rejects_bad_values(helm: Path, bad: str) -> None:
    proc = run_helm(helm, ["template", "x", str(CHART), "--set", bad], check=False)
    assert proc.returncode != 0, f"--set {bad} was accepted"


@pytest.mark.parametrize("values", ["defaults", "namespaced-rbac", "all-features", "demo"])
def test_helm_lint_is_clean(helm: Path, values: str) -> None:
    proc = run_helm(helm, ["lint", "--strict", str(CHART), "--values", str(VALUES_DIR / f"{values}.yaml")])
    assert "0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout


def test_notes_give_the_exact_port_forward_command() -> None:
    """The rendered NOTES are checked by the e2e install (tests/e2e/test_chart.py): rendering them needs a
    cluster even for a client-side dry run."""
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    command = (
        "kubectl --namespace {{ .Release.Namespace }} port-forward "
        'svc/{{ include "svcscope.fullname" . }} 8080:{{ .Values.service.port }}'
    )
    assert command in notes


KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][\w.-]*):(?P<rest>.*)$")


def test_every_value_is_documented() -> None:
    """Every key in values.yaml has a `# --` comment, or is a section whose keys all have one."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    keys: list[tuple[int, str, bool, int]] = []  # (indent, key, documented, line number)
    comment_block: list[str] = []
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("#"):
            comment_block.append(stripped)
            continue
        match = KEY.match(line)
        if match:
            documented = any(c.startswith("# --") for c in comment_block)
            keys.append((len(match["indent"]), match["key"], documented, number))
        comment_block = []

    undocumented: list[str] = []

    def check(index: int, covered: bool) -> tuple[int, bool]:
        """Checks keys[index] and its subtree; returns (index after the subtree, subtree fully documented)."""
        indent, key, documented, number = keys[index]
        covered = covered or documented
        nxt, children, children_ok = index + 1, 0, True
        while nxt < len(keys) and keys[nxt][0] > indent:
            nxt, ok = check(nxt, covered)
            children, children_ok = children + 1, children_ok and ok
        ok = covered or (children > 0 and children_ok)
        if not ok and children == 0:
            undocumented.append(f"line {number}: {key}")
        return nxt, ok

    i = 0
    while i < len(keys):
        i, _ = check(i, False)
    assert not undocumented, "values without a `# --` comment: " + ", ".join(undocumented)
