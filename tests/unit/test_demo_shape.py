"""`make demo`'s cluster shape: SVCSCOPE_DEMO_NODES/ZONES, and what it does with a cluster already running."""

from __future__ import annotations

import pytest

from devcluster.topology import Shape
from scripts.demo import DemoError, up_args, wanted_shape


def test_default_is_three_nodes_in_three_zones() -> None:
    assert wanted_shape({}) == (Shape(nodes=3, zones=3), False)


def test_environment_sets_the_shape() -> None:
    env = {"SVCSCOPE_DEMO_NODES": "3", "SVCSCOPE_DEMO_ZONES": "2"}
    assert wanted_shape(env) == (Shape(nodes=3, zones=2), True)
    # One node: one zone, without having to say so.
    assert wanted_shape({"SVCSCOPE_DEMO_NODES": "1"}) == (Shape(nodes=1, zones=1), True)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SVCSCOPE_DEMO_NODES": "three"}, "SVCSCOPE_DEMO_NODES='three'"),
        ({"SVCSCOPE_DEMO_NODES": "0"}, "SVCSCOPE_DEMO_NODES 0"),
        ({"SVCSCOPE_DEMO_NODES": "2", "SVCSCOPE_DEMO_ZONES": "3"}, "SVCSCOPE_DEMO_ZONES 3"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(DemoError, match=named):
        wanted_shape(env)


def test_no_cluster_or_same_shape_asks_for_the_shape() -> None:
    wanted = Shape(nodes=3, zones=3)
    expected = ["up", "--nodes", "3", "--zones", "3"]
    assert up_args(wanted, False, None, log=print) == expected
    assert up_args(wanted, True, Shape(nodes=3, zones=3, proxy_mode="nftables"), log=print) == expected


def test_running_cluster_of_another_shape_is_used_as_it_is() -> None:
    said: list[str] = []
    assert up_args(Shape(nodes=3, zones=3), False, Shape(), log=said.append) == ["up"]
    (note,) = said
    assert "1 node(s) in 1 zone(s)" in note and "make demo-down CLUSTER=1" in note


def test_asked_shape_against_a_running_cluster_says_what_to_do() -> None:
    with pytest.raises(DemoError) as err:
        up_args(Shape(nodes=3, zones=2), True, Shape(), log=print)
    message = str(err.value)
    assert message.startswith("SVCSCOPE_DEMO_NODES=3 SVCSCOPE_DEMO_ZONES=2")
    assert "make demo-down CLUSTER=1" in message and "SVCSCOPE_DC_INSTANCE=NAME" in message
