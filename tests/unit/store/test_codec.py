from __future__ import annotations

import dataclasses

import pytest

from app.probe.stats import Outcome, RunShape, summarize
from app.probe.targets import Backend
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
