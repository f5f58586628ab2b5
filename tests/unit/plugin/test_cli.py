"""The command line: flags, the local port, where the release is looked for, errors without tracebacks."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from app.plugin import PluginError, cli
from app.plugin.kubectl import Kubectl
from tests.unit.plugin.test_release import listing, service


def test_defaults_and_flags() -> None:
    args = cli.build_parser().parse_args([])
    assert (args.port, args.namespace, args.release, args.kubectl, args.open) == (
        8080,
        None,
        None,
        "kubectl",
        False,
    )
    args = cli.build_parser().parse_args(
        ["-n", "tools", "--release", "r", "--port", "0", "--kubeconfig", "k", "--context", "c", "--open"]
    )
    assert (args.namespace, args.release, args.port, args.kubeconfig, args.context) == (
        "tools",
        "r",
        0,
        "k",
        "c",
    )


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--port", "http"], "argument --port: 'http' is not a number"),
        (["--port", "70000"], "argument --port: 70000: give 1-65535, or 0 for any free port"),
        (["--port", "-1"], "argument --port"),
        (["--timeout", "0"], "argument --timeout"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_flags_are_named(argv: list[str], said: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err


def test_kubectl_flags_are_handed_on() -> None:
    kubectl = Kubectl("kc", kubeconfig="/k", context="ctx")
    assert kubectl.port_forward_argv("ns", "svc", 8080, 80) == [
        "kc", "--kubeconfig", "/k", "--context", "ctx", "--namespace", "ns", "port-forward", "svc/svc",
        "8080:80", "--address", "127.0.0.1",
    ]  # fmt: skip
    assert Kubectl().services_argv(None, "a=b")[:5] == [
        "kubectl",
        "get",
        "services",
        "--all-namespaces",
        "--selector",
    ]


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_busy_port_names_the_flag(listener: int) -> None:
    with pytest.raises(PluginError, match=rf"port {listener} on 127.0.0.1 is in use: .*--port N.*--port 0"):
        cli.local_port(listener)


def test_port_zero_is_a_free_port() -> None:
    port = cli.local_port(0)
    assert 0 < port < 65536
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # free indeed


@dataclass(frozen=True)
class FakeKubectl(Kubectl):
    """Answers `get services` per namespace (None: all) from a table; records what was asked."""

    by_namespace: dict[str | None, Any] = field(default_factory=dict)
    context_namespace: str = ""
    asked: list[str | None] = field(default_factory=list)

    def run(self, argv: Sequence[str]) -> str:
        if "config" in argv:
            return self.context_namespace
        namespace = argv[argv.index("--namespace") + 1] if "--namespace" in argv else None
        self.asked.append(namespace)
        answer = self.by_namespace[namespace]
        if isinstance(answer, PluginError):
            raise answer
        return json.dumps(answer)


def test_namespace_flag_looks_there_only() -> None:
    kubectl = FakeKubectl(by_namespace={"tools": listing(), None: listing(service("x", "svcscope"))})
    with pytest.raises(PluginError, match="in namespace 'tools' \\(-n\\)"):
        cli.find_target(kubectl, "tools", None)
    assert kubectl.asked == ["tools"]


def test_the_context_namespace_first_then_every_namespace() -> None:
    kubectl = FakeKubectl(
        by_namespace={"team": listing(service("team", "svcscope")), None: listing()}, context_namespace="team"
    )
    assert cli.find_target(kubectl, None, None).namespace == "team"
    assert kubectl.asked == ["team"]
    kubectl = FakeKubectl(
        by_namespace={"default": listing(), None: listing(service("tools", "svcscope"))},
        context_namespace="default",
    )
    assert cli.find_target(kubectl, None, None).namespace == "tools"
    assert kubectl.asked == ["default", None]


def test_no_right_to_list_every_namespace_names_the_flag() -> None:
    denied = PluginError('kubectl get services failed: services is forbidden: User "u" cannot list resource')
    with pytest.raises(PluginError, match=r"forbidden.*\nname the release's namespace with -n NAMESPACE"):
        cli.find_target(FakeKubectl(by_namespace={None: denied}), None, None)


def test_errors_end_in_one_line_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--kubectl", "/nonexistent/kubectl"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kubectl-svcscope: error: '/nonexistent/kubectl' not found: ")
    assert err.endswith("give its path with --kubectl\n") and err.count("\n") == 1
