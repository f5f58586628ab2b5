"""The pure parts of the actions: the probe pod's manifest, the output line splitter, and error messages
that say what is missing in plain words (never the apiserver's URL)."""

from __future__ import annotations

import aiohttp
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from app.config import Settings
from app.kube.actions import (
    MAX_OUTPUT_LINE,
    PROBE_POD_START_SLACK_S,
    ProbePodConfig,
    Refusal,
    _Lines,
    _ws_or_client_error,
)

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
