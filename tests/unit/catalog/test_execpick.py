"""The exec picker's choices: running containers of the namespaces where exec is allowed, bounded."""

from __future__ import annotations

from app.catalog.execpick import ExecChoice, exec_choices, parse_pick
from app.domain import Pod
from app.kube import convert
from tests.unit.kube.objects import pod


def _pod(name: str, ns: str, *containers: str, phase: str = "Running", **labels: str) -> Pod:
    raw = pod(name, ns, phase=phase, labels=labels)
    raw["spec"]["containers"] = [{"name": c} for c in containers]
    return convert.pod_from_api(raw)


PODS = {
    "team-a": [
        _pod("web-0", "team-a", "app", "sidecar"),
        _pod("done-0", "team-a", "app", phase="Succeeded"),
        _pod("svcscope-probe-1", "team-a", "probe", **{"app.kubernetes.io/component": "probe"}),
    ],
    "team-b": [_pod("tools", "team-b", "box")],
    "kube-system": [_pod("coredns", "kube-system", "coredns")],
}


def test_running_containers_of_allowed_namespaces_in_spec_order() -> None:
    found = exec_choices(PODS, lambda ns: PODS[ns], lambda ns: ns != "kube-system")
    assert found.choices == (
        ExecChoice("team-a", "web-0", "app"),
        ExecChoice("team-a", "web-0", "sidecar"),
        ExecChoice("team-b", "tools", "box"),
    )
    assert found.left_out == 0 and found.choices[1].value == "team-a/web-0/sidecar"


def test_the_list_is_bounded_and_says_how_many_are_left_out() -> None:
    found = exec_choices(PODS, lambda ns: PODS[ns], lambda ns: True, limit=2)
    assert [c.value for c in found.choices] == ["kube-system/coredns/coredns", "team-a/web-0/app"]
    assert found.left_out == 2


def test_a_picked_value_is_read_back_or_refused() -> None:
    assert parse_pick("team-a/web-0/app") == ("team-a", "web-0", "app")
    for bad in ("team-a/web-0", "a/b/c/d", "/web-0/app", "team-a//app"):
        assert parse_pick(bad) is None, bad
