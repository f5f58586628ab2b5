"""Where the dashboard may write: a table of (policy, write, target) -> allowed, or words of the reason."""

from __future__ import annotations

import pytest

from app.config import Settings
from app.writepolicy import SYSTEM_NAMESPACES, Decision, Write, WritePolicy

DEMO = WritePolicy.of(["svcscope", "team-a"], "svcscope")
TEAM_A_ONLY = WritePolicy.of(["team-a"], None)
NOTHING = WritePolicy()

# (policy, namespace, write, name, allowed, words the reason must contain)
CASES: list[tuple[WritePolicy, str, Write, str, bool, tuple[str, ...]]] = [
    # Listed namespaces: the affinity patch and exec are allowed there.
    (DEMO, "team-a", Write.SERVICE_PATCH, "web", True, ()),
    (DEMO, "svcscope", Write.SERVICE_PATCH, "svcscope-echo", True, ()),
    (DEMO, "team-a", Write.POD_EXEC, "web-7d9f-abcde", True, ()),
    # Anything else is refused, and the reason lists what is writable.
    (DEMO, "team-b", Write.SERVICE_PATCH, "web", False, ("team-b is not writable", "svcscope, team-a")),
    (DEMO, "team-b", Write.POD_EXEC, "web-1", False, ("run commands", "writableNamespaces")),
    (NOTHING, "team-a", Write.SERVICE_PATCH, "web", False, ("no namespace is writable",)),
    # The cluster's own namespaces: refused even when listed (the chart refuses to list them too).
    *[
        (WritePolicy.of([ns], ns), ns, write, "kube-dns", False, (f"{ns} is one of the cluster's own",))
        for ns in sorted(SYSTEM_NAMESPACES)
        for write in Write
    ],
    # The apiserver's own Service, even with default listed; other Services of default stay writable.
    (WritePolicy.of(["default"], None), "default", Write.SERVICE_PATCH, "kubernetes", False, ("apiserver",)),
    (WritePolicy.of(["default"], None), "default", Write.SERVICE_PATCH, "web", True, ()),
    # A pod that happens to be called "kubernetes" is not the apiserver's Service.
    (WritePolicy.of(["default"], None), "default", Write.POD_EXEC, "kubernetes", True, ()),
    # Probe pods: only in the release namespace, whatever the writable list says.
    (DEMO, "svcscope", Write.PROBE_POD, "svcscope-probe-1a2b3c4d", True, ()),
    (WritePolicy.of([], "svcscope"), "svcscope", Write.PROBE_POD, "svcscope-probe-1", True, ()),
    (DEMO, "team-a", Write.PROBE_POD, "svcscope-probe-1", False, ("only in svcscope", "own namespace")),
    (TEAM_A_ONLY, "team-a", Write.PROBE_POD, "p", False, ("SVCSCOPE_PROBE_POD_NAMESPACE",)),
    (WritePolicy.of([], ""), "svcscope", Write.PROBE_POD, "p", False, ("no namespace is set",)),
    # Namespaces are compared exactly.
    (DEMO, "Team-A", Write.SERVICE_PATCH, "web", False, ("Team-A is not writable",)),
    (DEMO, "", Write.SERVICE_PATCH, "web", False, ("not writable",)),
]


@pytest.mark.parametrize(
    ("policy", "namespace", "write", "name", "allowed", "words"),
    CASES,
    ids=[f"{c[2].name}-{c[1] or 'empty'}/{c[3]}-{'yes' if c[4] else 'no'}" for c in CASES],
)
def test_write_policy(
    policy: WritePolicy, namespace: str, write: Write, name: str, allowed: bool, words: tuple[str, ...]
) -> None:
    decision = policy.check(namespace, write, name)
    assert decision.allowed is allowed
    assert bool(decision) is allowed
    if allowed:
        assert decision == Decision(True)
    else:
        # A refusal names the action and the object, so the page can show it as it is.
        assert f"{write.value} {namespace}/{name}" in decision.reason
        for word in words:
            assert word in decision.reason, decision.reason


def test_policy_from_the_settings_the_chart_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chart passes the lists as comma-separated env vars; the policy built from them decides."""
    monkeypatch.setenv("SVCSCOPE_WRITABLE_NAMESPACES", "team-a, svcscope,")
    monkeypatch.setenv("SVCSCOPE_PROBE_POD_NAMESPACE", "svcscope")
    monkeypatch.setenv("POD_UID", "0f1e2d3c-aaaa-bbbb-cccc-000000000001")
    monkeypatch.setenv("SVCSCOPE_PROBE_POD_MEMORY_LIMIT", "48Mi")
    settings = Settings()
    assert settings.writable_namespaces == ["team-a", "svcscope"]
    assert settings.pod_uid == "0f1e2d3c-aaaa-bbbb-cccc-000000000001"
    assert (settings.probe_pod_cpu_request, settings.probe_pod_cpu_limit) == ("100m", "500m")
    assert (settings.probe_pod_memory_request, settings.probe_pod_memory_limit) == ("32Mi", "48Mi")
    policy = WritePolicy.of(settings.writable_namespaces, settings.probe_pod_namespace)
    assert policy.check("team-a", Write.SERVICE_PATCH, "web")
    assert policy.check("svcscope", Write.PROBE_POD, "p")
    assert not policy.check("team-a", Write.PROBE_POD, "p")


def test_nothing_is_writable_without_configuration() -> None:
    settings = Settings()
    assert settings.writable_namespaces == [] and settings.probe_pod_namespace is None
    policy = WritePolicy.of(settings.writable_namespaces, settings.probe_pod_namespace)
    assert not any(policy.check("svcscope", write, "x") for write in Write)
