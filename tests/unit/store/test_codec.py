from __future__ import annotations

import dataclasses
import json

import pytest

from app.domain import Origin
from app.probe import repick
from app.probe.seen import judge
from app.probe.stats import Outcome, RunShape, summarize
from app.probe.targets import Backend
from app.routing import Routing
from app.store.codec import decode_summary, encode_summary
from app.store.records import sequence_of
from tests.unit.store.factory import PODS_ABC, outcomes, shape

AFFINITY = RunShape(50, "ClientIP", 10800, False, 1, "HTTP", finished=True)
REUSE = RunShape(50, "None", None, True, 2, "TCP", finished=True)
GONE = (*PODS_ABC, Backend("echo-old", "10.0.0.8", 8080, None, False, False, True))


@pytest.mark.parametrize(
    ("results", "run_shape", "current", "known"),
    [
        pytest.param(outcomes(300), shape(300), PODS_ABC, PODS_ABC, id="uniform-with-chi-square"),
        pytest.param(outcomes(300, ("echo-a",)), shape(300), PODS_ABC, PODS_ABC, id="skewed"),
        pytest.param(outcomes(50, ("echo-a",)), AFFINITY, PODS_ABC, PODS_ABC, id="client-ip"),
        pytest.param(outcomes(50), REUSE, PODS_ABC, PODS_ABC, id="reuse-explanation"),
        pytest.param(
            outcomes(40, ("echo-a", "echo-old")),
            shape(40, changed=True),
            PODS_ABC,
            GONE,
            id="endpoints-changed-a-pod-gone",
        ),
        pytest.param([], shape(10), (), (), id="no-results"),
        pytest.param(
            [Outcome(i, None, "refused", 0.3, i) for i in range(1, 6)], shape(5), (), (), id="all-failed"
        ),
    ],
)
def test_a_summary_survives_json_exactly(results, run_shape, current, known) -> None:
    s = summarize(results, run_shape, current, known)
    back = decode_summary(encode_summary(s))
    assert back == dataclasses.replace(s, sequence=())
    # The sequence left out of the JSON is the one the stored outcomes give.
    assert sequence_of(list(reversed(results))) == s.sequence


def test_a_routing_verdict_survives_json_and_old_summaries_read_without_one() -> None:
    s = summarize(outcomes(30, ("echo-a",)), shape(30), PODS_ABC, PODS_ABC)
    verdict = Routing(
        client_node="node-<b>",
        client_zone="zone-a",
        fate="dropped",
        expected=(),
        reasons=("internalTrafficPolicy Local and no endpoint on node node-<b>: traffic is dropped",),
        as_expected=True,
        lines=("dropped as expected (no local endpoint on node node-<b>)",),
    )
    with_routing = dataclasses.replace(s, routing=verdict)
    assert decode_summary(encode_summary(with_routing)).routing == verdict
    # A summary stored before routing verdicts existed has no "routing" key at all.
    old = json.loads(encode_summary(s))
    del old["routing"]
    assert decode_summary(json.dumps(old)).routing is None


def test_what_the_server_saw_survives_json_and_old_summaries_read_without_it() -> None:
    s = summarize(outcomes(30, ("echo-a",)), shape(30), PODS_ABC, PODS_ABC)
    seen = judge((("198.18.0.1", 29), ("198.18.0.9", 1)), 2, "198.18.255.1", Origin.NODE)
    with_seen = dataclasses.replace(s, seen=seen)
    assert decode_summary(encode_summary(with_seen)).seen == seen
    old = json.loads(encode_summary(s))
    del old["seen"]
    assert decode_summary(json.dumps(old)).seen is None


def test_the_clientip_picks_over_time_survive_json_and_old_summaries_read_without_them() -> None:
    results = outcomes(6, ("echo-a",))
    report = repick.report(results, timeout_s=5, endpoints=3, client="svcscope-0 10.0.0.9")
    s = dataclasses.replace(summarize(results, AFFINITY, PODS_ABC, PODS_ABC), affinity=report)
    assert decode_summary(encode_summary(s)).affinity == report
    old = json.loads(encode_summary(s))
    del old["affinity"]
    assert decode_summary(json.dumps(old)).affinity is None
