"""Which Service is the dashboard, from kubectl's JSON: one found, none, several, --release."""

from __future__ import annotations

from typing import Any

import pytest

from app.plugin import PluginError
from app.plugin.release import Target, choose, targets


def service(
    namespace: str, name: str, release: str | None = None, ports: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "svcscope"}
    if release is not None:
        labels["app.kubernetes.io/instance"] = release
    return {
        "metadata": {"namespace": namespace, "name": name, "labels": labels},
        "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}] if ports is None else ports},
    }


def listing(*items: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "List", "items": list(items)}


def test_the_chart_service_and_its_http_port() -> None:
    found = targets(listing(service("tools", "svcscope", "svcscope")))
    assert found == [Target("tools", "svcscope", "svcscope", 80)]
    assert choose(found, None, "in any namespace") == found[0]


@pytest.mark.parametrize(
    ("ports", "expected"),
    [
        ([{"name": "metrics", "port": 9090}, {"name": "http", "port": 8081}], 8081),  # the named one
        ([{"name": "web", "port": 81}, {"name": "other", "port": 82}], 81),  # else the first TCP port
        ([{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "web", "port": 8080}], 8080),
        ([{"name": "http", "port": 53, "protocol": "UDP"}], None),  # nothing to port-forward
        ([{"name": "http", "port": "80"}], None),  # not a number: not ours to guess
    ],
)
def test_the_forwarded_port(ports: list[dict[str, Any]], expected: int | None) -> None:
    found = targets(listing(service("ns", "svcscope", ports=ports)))
    assert [t.port for t in found] == ([] if expected is None else [expected])


def test_malformed_items_are_skipped_not_fatal() -> None:
    good = service("ns", "svcscope", "svcscope")
    items = {"items": [{}, {"metadata": None}, "text", {"metadata": {"name": 3, "namespace": "ns"}}, good]}
    assert [t.service for t in targets(items)] == ["svcscope"]
    assert targets({"items": None}) == []


def test_none_found_names_the_namespace_flag() -> None:
    with pytest.raises(PluginError, match=r"no svcscope Service .* in namespace 'tools': .*-n NAMESPACE"):
        choose([], None, "in namespace 'tools'")


def test_several_releases_are_listed_with_the_flag_that_chooses() -> None:
    found = targets(listing(service("b", "one-svcscope", "one"), service("a", "svcscope", "svcscope")))
    with pytest.raises(PluginError) as exc:
        choose(found, None, "in any namespace")
    message = str(exc.value)
    assert "2 svcscope releases in any namespace" in message
    assert "\n  a/svcscope\n  b/one-svcscope (release one)\n" in message  # sorted, one a line
    assert "--release NAME" in message


@pytest.mark.parametrize("wanted", ["one", "one-svcscope"])  # the Helm release or the Service's name
def test_release_chooses_by_release_or_service_name(wanted: str) -> None:
    found = targets(listing(service("b", "one-svcscope", "one"), service("a", "svcscope", "svcscope")))
    assert choose(found, wanted, "in any namespace").service == "one-svcscope"


def test_an_unknown_release_lists_what_there_is() -> None:
    found = targets(listing(service("a", "svcscope", "svcscope")))
    with pytest.raises(PluginError, match=r"no svcscope release 'nope' in any namespace; .*\n  a/svcscope"):
        choose(found, "nope", "in any namespace")


def test_the_same_release_in_two_namespaces_needs_the_namespace() -> None:
    found = targets(listing(service("a", "svcscope", "svcscope"), service("b", "svcscope", "svcscope")))
    with pytest.raises(
        PluginError, match=r"2 svcscope releases .*\n  a/svcscope\n  b/svcscope\n.*-n NAMESPACE"
    ):
        choose(found, "svcscope", "in any namespace")
