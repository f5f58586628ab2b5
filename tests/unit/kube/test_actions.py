"""The pure parts of the actions: the probe pod's manifest, the output line splitter, and error messages
that say what is missing in plain words (never the apiserver's URL)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from app.config import Settings
from app.kube import actions as actions_module
from app.kube.actions import (
    MAX_OUTPUT_LINE,
    PROBE_POD_START_SLACK_S,
    ActionError,
    KubeActions,
    ProbePodConfig,
    Refusal,
    _Lines,
    _ws_or_client_error,
    policy_from,
)
from app.kube.waiting import reporting_to
from app.writepolicy import WritePolicy

SETTINGS = Settings(
    pod_name="svcscope-abc",
    pod_uid="uid-1",
    probe_pod_namespace="svcscope",
    probe_run_deadline_s=900.0,
    probe_pod_cpu_limit="250m",
    probe_pod_memory_limit="48Mi",
)


def test_probe_pod_is_owned_bounded_and_sized() -> None:
    config = ProbePodConfig.from_settings(SETTINGS)
    pod = config.manifest("svcscope-probe-1", ["python3", "-m", "app.echo", "client"], budget_s=12.5)
    assert pod["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "svcscope-abc", "uid": "uid-1"}
    ]
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "probe"
    assert pod["spec"]["activeDeadlineSeconds"] == 13 + PROBE_POD_START_SLACK_S
    (container,) = pod["spec"]["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": "32Mi"},
        "limits": {"cpu": "250m", "memory": "48Mi"},
    }


def test_probe_pod_deadline_is_capped_by_the_run_deadline() -> None:
    """count 10000 x timeout 30 must not give a pod that lives 300,035 s: a run ends after 900 s."""
    config = ProbePodConfig.from_settings(SETTINGS)
    assert config.deadline_s(10_000 * 30 + 5) == 900 + PROBE_POD_START_SLACK_S


def test_no_owner_outside_a_cluster() -> None:
    config = ProbePodConfig.from_settings(Settings(probe_pod_namespace="svcscope"))
    assert "ownerReferences" not in config.manifest("p", ["true"], 1.0)["metadata"]


def test_lines_are_split_across_chunks_and_long_ones_dropped() -> None:
    lines = _Lines()
    assert lines.feed(b'{"seq":1}\n{"se') == ['{"seq":1}']
    assert lines.feed(b'q":2}\n') == ['{"seq":2}']
    assert lines.feed(b"x" * (MAX_OUTPUT_LINE + 1)) == []
    assert lines.feed(b"yyy\nlast") == []  # the rest of the over-long line is dropped too
    assert lines.rest() == ["last"]


@pytest.mark.parametrize(
    ("exc", "refusal", "words"),
    [
        (
            aiohttp.WSServerHandshakeError(
                request_info=None,  # type: ignore[arg-type]
                history=(),
                status=403,
                message="Invalid response status wss://198.19.0.1:443/api/v1/namespaces/x/pods/p/exec",
            ),
            Refusal.FORBIDDEN,
            "may not exec into pods in x",
        ),
        (ApiException(status=404, reason="Not Found"), Refusal.NOT_FOUND, "exec into pod x/p: Not Found"),
        (
            aiohttp.ClientConnectionError("https://198.19.0.1:443 refused"),
            Refusal.FAILED,
            "could not be reached",
        ),
    ],
)
def test_errors_in_plain_words_without_urls(exc: Exception, refusal: Refusal, words: str) -> None:
    err = _ws_or_client_error(exc, "exec into pod x/p", forbidden_hint="exec into pods in x")
    assert err.refusal is refusal and words in err.message
    assert "://" not in err.message and "198.19.0.1" not in err.message


# -- probe pods against a fake core API: created, followed, deleted


class FakeResponse:
    """An unpreloaded log response: chunks as the apiserver streams them."""

    def __init__(self, chunks: list[bytes], status: int = 200) -> None:
        self.status = status
        self.content = self
        self._chunks = chunks
        self.released = False

    async def iter_any(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk

    def release(self) -> None:
        self.released = True


class FakeCore:
    def __init__(self, phases: list[str], logs: list[list[bytes]], waiting: str | None = None) -> None:
        self.phases = phases
        self.logs = logs
        self.waiting = waiting
        self.created: list[dict[str, Any]] = []
        self.deleted: list[tuple[str, str]] = []
        self.responses: list[FakeResponse] = []

    async def create_namespaced_pod(self, namespace: str, body: dict[str, Any]) -> None:
        self.created.append({"namespace": namespace, **body})

    async def read_namespaced_pod(self, name: str, namespace: str) -> Any:
        phase = self.phases.pop(0) if len(self.phases) > 1 else self.phases[0]
        waiting = SimpleNamespace(reason=self.waiting) if self.waiting else None
        statuses = [SimpleNamespace(state=SimpleNamespace(waiting=waiting))]
        running = phase not in ("Pending", "")
        return SimpleNamespace(
            spec=SimpleNamespace(node_name="node-1" if running else None),
            status=SimpleNamespace(
                phase=phase,
                container_statuses=statuses,
                conditions=None,
                pod_ip="198.18.0.77" if running else None,
            ),
        )

    async def read_namespaced_pod_log(self, name: str, namespace: str, **kw: Any) -> FakeResponse:
        assert kw["follow"] is True and kw["_preload_content"] is False
        response = FakeResponse(self.logs.pop(0))
        self.responses.append(response)
        return response

    async def delete_namespaced_pod(self, name: str, namespace: str, **kw: Any) -> None:
        self.deleted.append((namespace, name))


def actions_with(core: FakeCore, monkeypatch: pytest.MonkeyPatch, **settings: Any) -> KubeActions:
    monkeypatch.setattr(actions_module.k8s, "CoreV1Api", lambda api: core)  # type: ignore[attr-defined]
    monkeypatch.setattr(actions_module, "PHASE_POLL_S", 0.0)
    config = Settings(probe_pod_namespace="svcscope", **settings)
    return KubeActions(cast(Any, None), ProbePodConfig.from_settings(config), policy=policy_from(config))


async def test_a_probe_pods_log_is_followed_and_the_pod_deleted(monkeypatch: pytest.MonkeyPatch) -> None:
    # The stream drops once while the pod runs: it is followed again (the reader ignores repeated records).
    core = FakeCore(["Pending", "Running", "Running", "Succeeded"], [[b"one\ntw", b"o\n"], [b"one\nthree\n"]])
    actions = actions_with(core, monkeypatch)
    started: list[tuple[str | None, str | None]] = []
    stream = actions.probe_pod(
        ["python3"], 5.0, name="svcscope-probe-1", started=lambda ip, node: started.append((ip, node))
    )
    lines = [line async for line in stream]
    assert lines == ["one", "two", "one", "three"]
    assert started == [("198.18.0.77", "node-1")]  # told once, when the pod runs
    assert [c["namespace"] for c in core.created] == ["svcscope"]
    assert core.deleted == [("svcscope", "svcscope-probe-1")] and all(r.released for r in core.responses)


async def test_a_probe_pod_closed_early_is_deleted(monkeypatch: pytest.MonkeyPatch) -> None:
    core = FakeCore(["Running"], [[b"one\n", b"two\n"]])
    stream = actions_with(core, monkeypatch).probe_pod(["python3"], 5.0, name="p")
    async with contextlib.aclosing(stream):
        assert await anext(stream) == "one"
    assert core.deleted == [("svcscope", "p")]


async def test_a_probe_pod_that_cannot_start_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    core = FakeCore(["Pending"], [], waiting="ErrImageNeverPull")
    with pytest.raises(ActionError, match="cannot start: ErrImageNeverPull"):
        _ = [line async for line in actions_with(core, monkeypatch).probe_pod(["x"], 600.0, name="p")]
    assert core.deleted == [("svcscope", "p")]


async def test_no_probe_pod_outside_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    core = FakeCore(["Running"], [])
    monkeypatch.setattr(actions_module.k8s, "CoreV1Api", lambda api: core)  # type: ignore[attr-defined]
    refused = KubeActions(
        cast(Any, None),
        ProbePodConfig(image="i", namespace="kube-system"),
        policy=WritePolicy.of([], "kube-system"),
    )
    with pytest.raises(ActionError, match="cluster's own namespaces") as err:
        _ = [line async for line in refused.probe_pod(["x"], 1.0)]
    assert err.value.refusal is Refusal.FORBIDDEN and core.created == []
    with pytest.raises(ActionError, match="not writable"):
        _ = [line async for line in refused.exec_in_pod("team-a", "web-0", ["x"], 1.0)]


def test_a_probe_pod_can_be_pinned_to_a_node() -> None:
    config = ProbePodConfig.from_settings(SETTINGS)
    assert config.manifest("p", ["x"], 1.0, node="svcscope-dc-2")["spec"]["nodeName"] == "svcscope-dc-2"
    assert "nodeName" not in config.manifest("p", ["x"], 1.0)["spec"]


def test_a_node_origin_pod_shares_the_node_network_and_stays_unprivileged() -> None:
    """hostNetwork, cluster DNS, a label that says so; no privilege, no capability, no token, read-only."""
    config = ProbePodConfig.from_settings(SETTINGS)
    plain = config.manifest("p", ["x"], 1.0, node="n1")
    pod = config.manifest("p", ["x"], 1.0, node="n1", host_network=True)
    spec = pod["spec"]
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["metadata"]["labels"]["svcscope.io/host-network"] == "true"
    assert "hostNetwork" not in plain["spec"]
    assert "svcscope.io/host-network" not in plain["metadata"]["labels"]
    assert spec["containers"] == plain["spec"]["containers"]
    assert spec["securityContext"] == plain["spec"]["securityContext"]
    (container,) = spec["containers"]
    security = container["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"]} and security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False and "privileged" not in security
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["automountServiceAccountToken"] is False
    assert not {"hostPID", "hostIPC"} & set(spec)


async def test_a_probe_pod_on_a_node_nobody_runs_fails_soon(monkeypatch: pytest.MonkeyPatch) -> None:
    """The apiserver accepts any nodeName; a pod that no kubelet picks up never gets a condition."""
    core = FakeCore(["Pending"], [])
    monkeypatch.setattr(actions_module, "NODE_SILENT_S", 0.5)
    stream = actions_with(core, monkeypatch).probe_pod(["x"], 600.0, name="p", node="no-such-node")
    notes: list[str | None] = []
    with reporting_to(notes.append), pytest.raises(ActionError) as err:
        _ = [line async for line in stream]
    assert err.value.message == (
        "node 'no-such-node' did not pick up probe pod svcscope/p within 0.5 s: no running node has that "
        "name, or its kubelet is down. Check the name with `kubectl get nodes`, or leave the node empty "
        "to let the scheduler choose."
    )
    assert err.value.refusal is Refusal.NOT_FOUND and core.deleted == [("svcscope", "p")]
    assert core.created[0]["spec"]["nodeName"] == "no-such-node"
    # While it waits, the run says what for (the silence is the only sign of a wrong name).
    assert "waiting for node 'no-such-node' to pick up the probe pod" in notes


@pytest.mark.parametrize(
    ("status", "errors", "missing"),
    [
        (
            b'{"status":"Failure","message":"exec: \\"sh\\": executable file not found in $PATH"}',
            b"",
            True,
        ),
        (b'{"status":"Failure","message":"command terminated with non-zero exit code"}', b"boom\n", False),
    ],
)
def test_an_exec_of_a_missing_command_is_told_apart(status: bytes, errors: bytes, missing: bool) -> None:
    error = actions_module._exec_failure("exec into pod demo/web-0", errors, status, "sh")
    assert error.command_not_found is missing
    assert ("has no 'sh' command" in error.message) is missing
