"""Semantic checks of the rendered chart: least-privilege RBAC, hardened pods, demo workloads, schema."""

from __future__ import annotations

import base64
import itertools
import re
from pathlib import Path
from typing import Any

import pytest

from tests.chart.helmtool import CHART, VALUES_DIR, by_kind, documents, render, run_helm, template_args

READ_ONLY = {"get", "list", "watch"}
# Verbs that change something or widen access: none may appear in a ClusterRole.
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "escalate", "bind", "impersonate"}
SYSTEM_NAMESPACES = ["kube-system", "kube-public", "kube-node-lease"]
# Rules of the Role in each writable namespace, per value.
WRITE_RULES: dict[str, list[dict[str, Any]]] = {
    "rbac.patchServices": [
        {"apiGroups": [""], "resources": ["services"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    ],
    "rbac.exec": [{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get", "create"]}],
}
# Rules of the Role in the release namespace with rbac.probePods.
PROBE_POD_RULES = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "delete", "get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
]
SUBJECTS = [{"kind": "ServiceAccount", "name": "svcscope", "namespace": "svcscope"}]
BASE_RULES = [
    {"apiGroups": [""], "resources": ["services", "pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
]
# rbac.readNodes (on by default): nodes are cluster-scoped, so only a ClusterRole can grant them.
CLUSTER_RULES = [*BASE_RULES, {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}]


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


def _roles(docs: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(namespace, name) -> rules of every namespaced Role."""
    return {(r["metadata"]["namespace"], r["metadata"]["name"]): r["rules"] for r in by_kind(docs, "Role")}


def _pod_specs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d["spec"]["template"]["spec"] for d in by_kind(docs, "Deployment")]


def _dashboard(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deploy,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "svcscope"]
    return deploy


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _dashboard_env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return _env(_dashboard(docs)["spec"]["template"]["spec"]["containers"][0])


# -- RBAC


def test_default_rbac_is_cluster_wide_and_read_only(helm: Path) -> None:
    docs = _docs(helm)
    assert {d["kind"] for d in docs} == {
        "ServiceAccount",
        "Secret",
        "ClusterRole",
        "ClusterRoleBinding",
        "Service",
        "Deployment",
    }
    (role,) = by_kind(docs, "ClusterRole")
    assert role["rules"] == CLUSTER_RULES
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
    # The only Secret is the chart's own CSRF key, and the ServiceAccount cannot read it.
    assert [s["metadata"]["name"] for s in by_kind(docs, "Secret")] == ["svcscope-csrf"]


def test_no_exec_by_default(helm: Path) -> None:
    for rules in _role_rules(_docs(helm)):
        assert not {r for r in _granted(rules) if r[1] in ("pods/exec", "pods/log", "pods/attach")}


@pytest.mark.parametrize("flag", sorted(WRITE_RULES))
def test_each_write_verb_only_with_its_value_and_only_in_writable_namespaces(helm: Path, flag: str) -> None:
    docs = _docs(helm, f"{flag}=true", "rbac.writableNamespaces={team-a,team-b}")
    (cluster_role,) = by_kind(docs, "ClusterRole")
    assert cluster_role["rules"] == CLUSTER_RULES
    assert _roles(docs) == {("team-a", "svcscope-write"): WRITE_RULES[flag],
                            ("team-b", "svcscope-write"): WRITE_RULES[flag]}  # fmt: skip
    for binding in by_kind(docs, "RoleBinding"):
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": "svcscope-write"}  # fmt: skip
        assert binding["subjects"] == SUBJECTS
    env = _dashboard_env(docs)
    assert env["SVCSCOPE_WRITABLE_NAMESPACES"] == "team-a,team-b"


@pytest.mark.parametrize("flag", sorted(WRITE_RULES))
def test_a_write_value_without_writable_namespaces_grants_nothing(helm: Path, flag: str) -> None:
    docs = _docs(helm, f"{flag}=true")
    assert _role_rules(docs) == [CLUSTER_RULES]
    assert "SVCSCOPE_WRITABLE_NAMESPACES" not in _env(
        _dashboard(docs)["spec"]["template"]["spec"]["containers"][0]
    )


def test_writable_namespaces_without_a_write_value_grant_nothing(helm: Path) -> None:
    docs = _docs(helm, "rbac.writableNamespaces={team-a}")
    assert _role_rules(docs) == [CLUSTER_RULES]


def test_probe_pods_only_in_the_release_namespace(helm: Path) -> None:
    docs = _docs(helm, "rbac.probePods=true", "rbac.writableNamespaces={team-a}")
    (cluster_role,) = by_kind(docs, "ClusterRole")
    assert cluster_role["rules"] == CLUSTER_RULES
    assert _roles(docs) == {("svcscope", "svcscope-probe-pods"): PROBE_POD_RULES}
    (binding,) = by_kind(docs, "RoleBinding")
    assert binding["metadata"]["namespace"] == "svcscope"
    assert binding["roleRef"]["name"] == "svcscope-probe-pods" and binding["subjects"] == SUBJECTS


WRITE_FLAGS = ["rbac.patchServices", "rbac.exec", "rbac.probePods"]
COMBINATIONS = [
    (flags, watched, writable)
    for n in range(len(WRITE_FLAGS) + 1)
    for flags in itertools.combinations(WRITE_FLAGS, n)
    for watched, writable in [((), ()), ((), ("team-a", "svcscope")), (("team-a", "team-b"), ("team-b",))]
]


@pytest.mark.parametrize(
    ("flags", "watched", "writable"),
    COMBINATIONS,
    ids=[
        f"{'+'.join(f.split('.')[1] for f in flags) or 'read-only'}"
        f"-watch:{','.join(watched) or 'all'}-write:{','.join(writable) or 'none'}"
        for flags, watched, writable in COMBINATIONS
    ],
)
def test_no_cluster_role_writes_in_any_combination(
    helm: Path, flags: tuple[str, ...], watched: tuple[str, ...], writable: tuple[str, ...]
) -> None:
    """Writes live only in Roles: in each writable namespace (patch, exec) and the release's (probe pods)."""
    sets = [f"{flag}=true" for flag in flags]
    for value, namespaces in (("rbac.namespaces", watched), ("rbac.writableNamespaces", writable)):
        if namespaces:  # `--set x={}` would be a list of one empty string
            sets.append(f"{value}={{{','.join(namespaces)}}}")
    docs = _docs(helm, *sets)
    for role in by_kind(docs, "ClusterRole"):
        assert {verb for _, _, verb in _granted(role["rules"])} == READ_ONLY
    writing = {key for key, rules in _roles(docs).items() if {v for _, _, v in _granted(rules)} & WRITE_VERBS}
    expected = set()
    if {"rbac.patchServices", "rbac.exec"} & set(flags):
        expected |= {(ns, "svcscope-write") for ns in writable}
    if "rbac.probePods" in flags:
        expected.add(("svcscope", "svcscope-probe-pods"))
    assert writing == expected
    # Every binding points at a Role of its own namespace, for the dashboard's ServiceAccount only.
    roles = _roles(docs)
    for binding in by_kind(docs, "RoleBinding"):
        assert (binding["metadata"]["namespace"], binding["roleRef"]["name"]) in roles
        assert binding["subjects"] == SUBJECTS


@pytest.mark.parametrize("system", SYSTEM_NAMESPACES)
def test_system_namespaces_are_never_writable(helm: Path, system: str) -> None:
    proc = run_helm(
        helm,
        template_args(sets=["rbac.patchServices=true", f"rbac.writableNamespaces={{team-a,{system}}}"]),
        check=False,
    )
    assert proc.returncode != 0
    assert (
        f"rbac.writableNamespaces lists {system}: svcscope never writes in the cluster's own" in proc.stderr
    )


def test_writable_namespaces_must_be_watched(helm: Path) -> None:
    sets = ["rbac.namespaces={team-a}", "rbac.writableNamespaces={team-b}"]
    proc = run_helm(helm, template_args(sets=sets), check=False)
    assert proc.returncode != 0
    assert (
        "rbac.writableNamespaces lists team-b, which is not watched (rbac.namespaces: team-a)" in proc.stderr
    )


def test_node_origin_needs_probe_pods_and_grants_no_more(helm: Path) -> None:
    """The node origin is a probe pod on the node's network: without rbac.probePods the chart refuses it, and
    with it the release gets exactly the Roles and rules it has with probe pods alone."""
    proc = run_helm(helm, template_args(sets=["rbac.nodeOrigin=true"]), check=False)
    assert proc.returncode != 0
    assert "rbac.nodeOrigin runs hostNetwork probe pods" in proc.stderr
    with_node = _roles(_docs(helm, "rbac.probePods=true", "rbac.nodeOrigin=true"))
    assert with_node == _roles(_docs(helm, "rbac.probePods=true"))
    assert "SVCSCOPE_PROBE_ORIGINS" not in _dashboard_env(_docs(helm))


def test_no_probe_pods_in_a_system_namespace(helm: Path) -> None:
    args = ["template", "svcscope", str(CHART), "--namespace", "kube-system", "--set", "rbac.probePods=true"]
    proc = run_helm(helm, args, check=False)
    assert proc.returncode != 0
    assert "probe pods in the release namespace, kube-system" in proc.stderr
    # Without probe pods, reading from kube-system stays possible.
    run_helm(helm, args[:-2])


def test_namespaced_rbac_makes_roles_and_scopes_the_app(helm: Path) -> None:
    docs = _docs(helm, values="namespaced-rbac")
    assert not by_kind(docs, "ClusterRole")
    assert not by_kind(docs, "ClusterRoleBinding")
    assert _roles(docs) == {
        ("team-a", "svcscope"): BASE_RULES,
        ("team-b", "svcscope"): BASE_RULES,
        ("team-a", "svcscope-write"): WRITE_RULES["rbac.patchServices"],
    }
    bindings = by_kind(docs, "RoleBinding")
    assert sorted((b["metadata"]["namespace"], b["roleRef"]["name"]) for b in bindings) == [
        ("team-a", "svcscope"),
        ("team-a", "svcscope-write"),
        ("team-b", "svcscope"),
    ]
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == SUBJECTS
    container = _dashboard(docs)["spec"]["template"]["spec"]["containers"][0]
    assert _env(container)["SVCSCOPE_NAMESPACES"] == "team-a,team-b"
    assert _env(container)["SVCSCOPE_WRITABLE_NAMESPACES"] == "team-a"
    # No ClusterRole, so no nodes: the app does not try, and says node zones are unknown.
    assert _env(container)["SVCSCOPE_WATCH_NODES"] == "false"


def test_cluster_wide_app_has_no_namespace_filter(helm: Path) -> None:
    container = _dashboard(_docs(helm))["spec"]["template"]["spec"]["containers"][0]
    assert "SVCSCOPE_NAMESPACES" not in _env(container)
    assert "SVCSCOPE_WATCH_NODES" not in _env(container)


def test_read_nodes_off_drops_the_nodes_rule_and_tells_the_app(helm: Path) -> None:
    docs = _docs(helm, "rbac.readNodes=false")
    (cluster_role,) = by_kind(docs, "ClusterRole")
    assert cluster_role["rules"] == BASE_RULES
    assert _dashboard_env(docs)["SVCSCOPE_WATCH_NODES"] == "false"


def test_dashboard_knows_its_node_from_the_downward_api(helm: Path) -> None:
    container = _dashboard(_docs(helm))["spec"]["template"]["spec"]["containers"][0]
    (node_env,) = [e for e in container["env"] if e["name"] == "NODE_NAME"]
    assert node_env["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


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
        (("rbac.probePods=true", "rbac.nodeOrigin=true"), "probe-pod,node"),
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
    ("sets", "enabled", "granted"),
    [
        ((), False, False),
        (("rbac.patchServices=true",), True, False),
        (("rbac.patchServices=true", "rbac.writableNamespaces={team-a}"), True, True),
        (("rbac.exec=true", "rbac.probePods=true", "rbac.writableNamespaces={team-a}"), False, False),
    ],
)
def test_affinity_patch_follows_the_patch_verb(
    helm: Path, sets: tuple[str, ...], enabled: bool, granted: bool
) -> None:
    """The app offers the affinity toggle with rbac.patchServices; the verb exists only in writable namespaces
    (with none listed the app says why on the page)."""
    docs = _docs(helm, *sets)
    env = _dashboard_env(docs)
    patchable = {
        ns for (ns, _), rules in _roles(docs).items() if ("", "services", "patch") in _granted(rules)
    }
    assert patchable == ({"team-a"} if granted else set())
    assert env.get("SVCSCOPE_ALLOW_AFFINITY_PATCH") == ("true" if enabled else None)
    assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}


def test_probe_pods_get_their_namespace_resources_and_owner(helm: Path) -> None:
    """Probe pods: the release namespace, the resources of probePods.resources, and the dashboard pod's name
    and uid for their ownerReference."""
    env = _dashboard_env(_docs(helm, values="all-features"))
    assert env["SVCSCOPE_PROBE_POD_NAMESPACE"] == "svcscope"
    assert env["SVCSCOPE_PROBE_POD_CPU_REQUEST"] == "50m"
    assert env["SVCSCOPE_PROBE_POD_CPU_LIMIT"] == "1"
    assert env["SVCSCOPE_PROBE_POD_MEMORY_REQUEST"] == "24Mi"
    assert env["SVCSCOPE_PROBE_POD_MEMORY_LIMIT"] == "48Mi"
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_UID"] == {"fieldRef": {"fieldPath": "metadata.uid"}}
    # The defaults: small, and bounded.
    env = _dashboard_env(_docs(helm, "rbac.probePods=true"))
    names = ("CPU_REQUEST", "CPU_LIMIT", "MEMORY_REQUEST", "MEMORY_LIMIT")
    assert [env[f"SVCSCOPE_PROBE_POD_{name}"] for name in names] == ["100m", "500m", "32Mi", "64Mi"]
    # Without probe pods there is nothing to configure.
    env = _dashboard_env(_docs(helm))
    assert not [name for name in env if name.startswith("SVCSCOPE_PROBE_POD_")]


# -- The CSRF key


def _csrf_key(docs: list[dict[str, Any]]) -> str:
    (secret,) = by_kind(docs, "Secret")
    assert secret["metadata"]["name"] == "svcscope-csrf"
    assert secret["type"] == "Opaque" and set(secret["data"]) == {"csrf-secret"}
    return base64.b64decode(secret["data"]["csrf-secret"]).decode()


def test_csrf_key_is_a_generated_secret(helm: Path) -> None:
    """Without a cluster to look the installed key up in, every render makes a new random key (the e2e test
    checks that an upgrade keeps the installed one)."""
    docs = _docs(helm)
    key = _csrf_key(docs)
    assert re.fullmatch(r"[A-Za-z0-9]{48}", key)
    assert _csrf_key(_docs(helm)) != key
    env = _dashboard_env(docs)
    assert env["SVCSCOPE_CSRF_SECRET"] == {"secretKeyRef": {"name": "svcscope-csrf", "key": "csrf-secret"}}


def test_csrf_key_from_an_existing_secret(helm: Path) -> None:
    docs = _docs(helm, "csrf.existingSecret=team-csrf")
    assert not by_kind(docs, "Secret")
    env = _dashboard_env(docs)
    assert env["SVCSCOPE_CSRF_SECRET"] == {"secretKeyRef": {"name": "team-csrf", "key": "csrf-secret"}}


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
        "svcscope-echo-local",
        "svcscope-echo-same-node",
        "svcscope-echo-same-zone",
        "svcscope-echo-topology-auto",
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
    # One Service per topology rule, each over the same spread Deployment and otherwise plain.
    assert services["svcscope-echo-local"]["internalTrafficPolicy"] == "Local"
    assert services["svcscope-echo-same-node"]["trafficDistribution"] == "PreferSameNode"
    assert services["svcscope-echo-same-zone"]["trafficDistribution"] == "PreferSameZone"
    (auto,) = [s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "svcscope-echo-topology-auto"]
    assert auto["metadata"]["annotations"] == {"service.kubernetes.io/topology-mode": "Auto"}
    assert not {"internalTrafficPolicy", "trafficDistribution"} & set(services["svcscope-echo-topology-auto"])
    (spread,) = echo["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    # Soft, so that a one-node cluster still runs every replica.
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway" and spread["maxSkew"] == 1
    assert spread["labelSelector"]["matchLabels"] == echo["spec"]["selector"]["matchLabels"]


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
        "rbac.writableNamespaces[0]=Not_A_Namespace",
        "probePods.resources.limits.memory=lots",
        "probePods.resources.limits.cpu=-1",
        "probePods.priority=high",
        "csrf.existingSecret=Bad_Name",
        "csrf.key=fixed",
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
