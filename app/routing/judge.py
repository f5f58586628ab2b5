"""Expected versus observed: which answers a run should have had, and the likely cause when they differ."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from app.routing.expect import Candidate, Client, Expectation, Fate, Policy, TopologyMode


@dataclass(frozen=True, slots=True)
class Verdict:
    as_expected: bool
    lines: tuple[str, ...]


def judge(
    expectation: Expectation,
    hits: Mapping[str, int],
    errors: Mapping[str, int],
    *,
    endpoints_changed: bool = False,
    fresh_picks: int = 0,
) -> Verdict:
    """Observed answers (pod → hits, error kind → count) against the expectation, with the likely cause.
    ``fresh_picks``: under ClientIP, how many times the client's pod changed after an idle gap longer than
    the timeout (and never otherwise): that many extra pods are expected."""
    lines: list[str] = []
    answered = {p for p, n in hits.items() if n > 0}
    failures = sum(errors.values())
    timeouts = errors.get("timeout", 0)
    if expectation.fate is Fate.UNKNOWN:
        return Verdict(False, ("no expectation: " + (expectation.reasons[0] if expectation.reasons else ""),))
    if expectation.fate is Fate.DROPPED:
        if not answered and failures and timeouts == failures:
            return Verdict(True, (f"dropped as expected (no local endpoint on node {expectation.node})",))
        if answered:
            lines.append(
                f"{', '.join(sorted(answered))} answered although traffic should be dropped: "
                + _cause(endpoints_changed)
            )
        if failures != timeouts:
            lines.append("failures other than timeouts: a drop shows as timeouts only")
        return Verdict(False, tuple(lines))
    if expectation.fate is Fate.REJECTED:
        refused = errors.get("refused", 0)
        if not answered and failures and refused == failures:
            return Verdict(True, ("refused as expected (no usable endpoint)",))
        lines.append("expected refusals (no usable endpoint): " + _cause(endpoints_changed))
        return Verdict(False, tuple(lines))

    allowed = expectation.pods
    unexpected = sorted(answered - allowed)
    for pod in unexpected:
        lines.append(
            f"pod {pod} answered but should not ({_why_not(pod, expectation)}): {_cause(endpoints_changed)}"
        )
    if failures:
        lines.append(f"{failures} request(s) failed although {len(allowed)} endpoint(s) should answer")
    if expectation.sticky_s is not None and len(answered) > 1 + fresh_picks:
        lines.append(
            f"ClientIP affinity should keep one client on one pod, but {len(answered)} answered: a pause"
            f" longer than {expectation.sticky_s} s re-picks, or the endpoints changed"
        )
    if lines:
        return Verdict(False, tuple(lines))
    if not answered:
        return Verdict(False, ("nothing answered",))
    done = f"as expected: every answer came from the {len(allowed)} expected endpoint(s)"
    if expectation.sticky_s is not None and fresh_picks and len(answered) > 1:
        done += (
            f"; the client moved pod {fresh_picks} time(s), each after an idle gap longer than the timeout"
        )
    return Verdict(True, (done,))


def _why_not(pod: str, expectation: Expectation) -> str:
    if expectation.policy is Policy.LOCAL:
        return "not on the client's node"
    if expectation.mode is TopologyMode.SAME_NODE:
        return "not hinted for the client's node"
    if expectation.mode is TopologyMode.SAME_ZONE:
        return "not hinted for the client's zone"
    if expectation.terminating_fallback:
        return "not serving-terminating while no endpoint is ready"
    return "not a ready endpoint"


def _cause(endpoints_changed: bool) -> str:
    if endpoints_changed:
        return "the endpoints changed during the run"
    return (
        "likely kube-proxy has not yet programmed the latest endpoints or hints (or stale conntrack entries)"
    )


@dataclass(frozen=True, slots=True)
class Routing:
    """A run's expected endpoints beside its verdict, as plain data: kept with the run's frozen report."""

    client_node: str | None
    client_zone: str | None
    fate: str  # a Fate value
    expected: tuple[str, ...]  # the endpoints (pod names, or addresses) kube-proxy may pick, sorted
    reasons: tuple[str, ...]  # why those: the rule in effect for this client
    as_expected: bool
    lines: tuple[str, ...]  # the verdict in words


def routing_of(
    expectation: Expectation,
    client: Client,
    hits: Mapping[str, int],
    errors: Mapping[str, int],
    *,
    endpoints_changed: bool = False,
    fresh_picks: int = 0,
) -> Routing:
    verdict = judge(expectation, hits, errors, endpoints_changed=endpoints_changed, fresh_picks=fresh_picks)
    return Routing(
        client_node=client.node,
        client_zone=client.zone,
        fate=expectation.fate.value,
        expected=tuple(sorted(expectation.pods)),
        reasons=expectation.reasons,
        as_expected=verdict.as_expected,
        lines=verdict.lines,
    )


def zone_of(node: str | None, node_zone: str | None, endpoints: Sequence[Candidate]) -> str | None:
    """The client node's zone: its Node label when the Node is known (``node_zone``, "" = unlabelled),
    else the zone an endpoint on that node carries (the EndpointSlice controller copies the label), else
    unknown (None)."""
    if node is None:
        return None
    if node_zone is not None:
        return node_zone
    return next((c.zone for c in endpoints if c.node == node and c.zone is not None), None)
