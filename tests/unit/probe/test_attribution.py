from __future__ import annotations

import json
import time

import pytest

from app.probe.attribution import (
    MEMO_CHARS,
    MEMO_ENTRIES,
    Candidate,
    Fingerprints,
    Matcher,
    Method,
    Reply,
    RuleError,
    attribute,
    fingerprint,
    parse_rule,
)

PODS = [Candidate(f"web-{i}", f"10.1.0.{i + 1}") for i in range(12)]  # web-1 and web-10, 10.1.0.1 / .11


def http(body: str, headers: dict[str, str] | None = None, status: int = 200) -> Reply:
    return Reply(
        body=body.encode(),
        headers=tuple((k.lower(), v) for k, v in (headers or {}).items()),
        status=status,
    )


WHOAMI = (
    "Hostname: web-10\nIP: 127.0.0.1\nIP: ::1\nIP: 10.1.0.11\nRemoteAddr: 198.18.0.3:51234\n"
    "GET / HTTP/1.1\nHost: 198.19.0.50\nUser-Agent: svcscope-probe/0.1\n"
)
JMALLOC = (
    "Request served by web-1\n\nGET / HTTP/1.1\n\nHost: 198.19.0.50:80\nUser-Agent: svcscope-probe/0.1\n"
)


@pytest.mark.parametrize(
    ("reply", "pod"),
    [
        pytest.param(http("web-1"), "web-1", id="agnhost-serve-hostname"),
        pytest.param(http("web-10\n"), "web-10", id="agnhost-prefix-name"),
        pytest.param(http("You've hit web-1\n"), "web-1", id="kubia"),
        pytest.param(http("You've hit web-10."), "web-10", id="kubia-sentence"),
        pytest.param(http(WHOAMI), "web-10", id="traefik-whoami"),
        pytest.param(http(JMALLOC), "web-1", id="jmalloc-echo-server"),
        pytest.param(
            http(json.dumps({"pod": "web-2", "ip": "10.1.0.3", "path": "/"}), {"X-Pod-Name": "web-2"}),
            "web-2",
            id="svcscope-echo",
        ),
        pytest.param(http("ok", {"X-Served-By": "web-11"}), "web-11", id="header-only"),
        pytest.param(http("served from 10.1.0.11:8080"), "web-10", id="pod-ip-with-port"),
        pytest.param(Reply(b"pod=web-3 ip=10.1.0.4 node=n1"), "web-3", id="tcp-banner"),
        pytest.param(Reply(b"pod=web-0 ip=10.1.0.1 node=n1"), "web-0", id="udp-datagram"),
        # svcscope's echo names the client address it saw; here the client is another endpoint (web-5).
        pytest.param(
            http(json.dumps({"pod": "web-2", "ip": "10.1.0.3", "peer": "10.1.0.6:40112"})),
            "web-2",
            id="svcscope-echo-peer-is-an-endpoint",
        ),
        pytest.param(
            Reply(b"pod=web-3 ip=10.1.0.4 node=n1 peer=10.1.0.6:40112"), "web-3", id="tcp-banner-peer"
        ),
    ],
)
def test_automatic(reply: Reply, pod: str) -> None:
    got = attribute(reply, PODS)
    assert (got.pod, got.method) == (pod, Method.AUTO)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param("web-100 answered", "no current endpoint", id="longer-name"),
        pytest.param("xweb-1", "no current endpoint", id="embedded"),
        pytest.param("web-1.other", "no current endpoint", id="dotted-suffix"),
        pytest.param("10.1.0.111", "no current endpoint", id="ip-prefix"),
        pytest.param("hello world", "no current endpoint", id="nothing"),
        pytest.param("web-1 proxied to web-2", "several endpoints", id="two-pods"),
    ],
)
def test_never_guesses(body: str, reason: str) -> None:
    got = attribute(http(body), PODS)
    assert got.pod is None and got.method is None
    assert got.reason is not None and reason in got.reason
    assert got.hint


@pytest.mark.parametrize(
    ("rule", "reply", "pod"),
    [
        ("header:X-Backend", http("web-1 and web-2", {"X-Backend": "web-2"}), "web-2"),
        ("regex:You've hit (\\S+)", http("web-3 says: You've hit web-4"), "web-4"),
        ("regex:served-by=[a-z0-9-]+", http("x served-by=web-5"), None),  # whole match is not a pod
        ("json:meta.host", http('{"meta": {"host": "web-6"}, "peer": "web-7"}'), "web-6"),
        ("json:ips.0", http('{"ips": ["10.1.0.8"]}'), "web-7"),
        ("json:pod", http("not json"), None),
        ("header:X-Backend", http("web-1"), None),
    ],
)
def test_rule_wins_over_automatic(rule: str, reply: Reply, pod: str | None) -> None:
    got = attribute(reply, PODS, rule=parse_rule(rule))
    assert got.pod == pod
    assert got.method == (Method.RULE if pod else None)
    if pod is None:
        assert got.reason


def test_rule_naming_unknown_pod_is_not_attributed() -> None:
    got = attribute(http("", {"X-Pod": "web-99"}), PODS, rule=parse_rule("header:X-Pod"))
    assert got.pod is None and got.reason is not None and "web-99" in got.reason


@pytest.mark.parametrize(
    "text",
    ["", "header", "header:", "header:bad name", "regex:(", "json:a..b", "xpath://x", "regex:" + "a" * 300],
)
def test_bad_rules(text: str) -> None:
    with pytest.raises(RuleError):
        parse_rule(text)


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        pytest.param(r"(\w+)-\1", "invalid escape sequence", id="backreference"),
        pytest.param(r"(?<=pod )\S+", "invalid perl operator", id="lookbehind"),
        pytest.param(r"(?=web)\S+", "invalid perl operator", id="lookahead"),
        pytest.param(r"a++", "bad repetition operator", id="possessive"),
        pytest.param(r"pod=(\S+)\Z", "invalid escape sequence", id="python-end-of-text"),
        pytest.param(r"(?:a{1000}){1000}", "invalid repetition size", id="too-large"),
    ],
)
def test_rules_re2_cannot_run_are_refused_clearly(pattern: str, says: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_rule("regex:" + pattern)
    message = str(caught.value)
    assert says in message and "RE2" in message and "b'" not in message


# Exponential for a backtracking engine: Python's re needs about 10 s for 25 a's and twice that per extra a.
REDOS_RULE = "regex:(a+)+$"


CATASTROPHIC_S = 1.0


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"a" * 27 + b"!", id="28-bytes"),
        pytest.param(b"a" * (16 * 1024 - 1) + b"!", id="16-KiB"),
        pytest.param(b"a" * (1024 * 1024) + b"!", id="1-MiB-reply-only-16-KiB-read"),
    ],
)
def test_regex_rules_run_in_linear_time(body: bytes) -> None:
    rule = parse_rule(REDOS_RULE)
    started = time.perf_counter()
    got = attribute(Reply(body, status=200), PODS, rule=rule)
    elapsed = time.perf_counter() - started
    assert got.pod is None and got.method is None
    # Backtracking takes 80 s on the 28 bytes alone; a linear engine takes microseconds. The bound sits far
    # from both, so a loaded machine cannot make it fail and a backtracking engine cannot make it pass.
    assert elapsed < CATASTROPHIC_S, f"{elapsed * 1000:.1f} ms"


def test_regex_rules_match_unicode_text_and_groups() -> None:
    rule = parse_rule(r"regex:(?i)served by (?P<pod>[a-z0-9-]+)")
    assert attribute(http("Ünïcode first. SERVED BY web-4\n"), PODS, rule=rule).pod == "web-4"


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_json_rule_refuses_deep_nesting_as_an_attribution_error(opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    body = (opener * 8000 + "1" + closer * 8000).encode()
    got = attribute(Reply(body, status=200), PODS, rule=parse_rule("json:pod"))
    assert got.pod is None and got.method is None
    assert "nested deeper than 64 levels" in (got.reason or "") and "json:pod" in (got.reason or "")


@pytest.mark.parametrize(
    ("body", "pod"),
    [
        pytest.param({"pod": "web-5", "note": "[" * 500 + "{" * 500}, "web-5", id="brackets-inside-strings"),
        pytest.param({"pod": "web-5", "q": '\\"[[[' * 100}, "web-5", id="escaped-quotes"),
        pytest.param({"pod": "web-6", "d": json.loads("[" * 60 + "]" * 60)}, "web-6", id="60-deep"),
    ],
)
def test_json_rule_reads_bodies_within_the_depth_bound(body: object, pod: str) -> None:
    got = attribute(http(json.dumps(body)), PODS, rule=parse_rule("json:pod"))
    assert (got.pod, got.method) == (pod, Method.RULE)


def _fps(replies: dict[str, list[bytes]]) -> Fingerprints:
    fps = Fingerprints()
    for pod, bodies in replies.items():
        for body in bodies:
            fps.add(pod, Reply(body, status=200))
    return fps


def test_fingerprint_attribution_when_distinct_and_stable() -> None:
    fps = _fps({"web-0": [b'{"token":"aa"}'] * 2, "web-1": [b'{"token":"bb"}'] * 2})
    assert fps.problem() is None
    got = attribute(Reply(b'{"token":"bb"}', status=200), PODS, fingerprints=fps)
    assert (got.pod, got.method) == ("web-1", Method.FINGERPRINT)
    other = attribute(Reply(b'{"token":"cc"}', status=200), PODS, fingerprints=fps)
    assert other.pod is None and "fingerprint" in (other.reason or "")


@pytest.mark.parametrize(
    ("replies", "problem"),
    [
        ({"web-0": [b"same"] * 2, "web-1": [b"same"] * 2}, "identical"),
        ({"web-0": [b"t=1", b"t=2"], "web-1": [b"u"] * 2}, "vary"),
        ({}, "no endpoint"),
    ],
)
def test_fingerprints_refused_when_ambiguous(replies: dict[str, list[bytes]], problem: str) -> None:
    fps = _fps(replies)
    assert problem in (fps.problem() or "")
    got = attribute(Reply(b"same", status=200), PODS, fingerprints=fps)
    assert got.pod is None and problem in (got.reason or "")


def test_auto_can_be_disabled() -> None:
    got = attribute(http("web-1"), PODS, auto=False)
    assert got.pod is None


def test_fingerprints_ignore_the_client_address_the_echo_reports() -> None:
    # Anonymous echo pods: the token tells them apart, the peer differs with every connection.
    fps = _fps(
        {
            "web-0": [
                b'{"token": "aa", "peer": "10.9.0.1:40001"}',
                b'{"token": "aa", "peer": "10.9.0.1:40002"}',
            ],
            "web-1": [b"token=bb peer=[fd00::1]:40003", b"token=bb peer=[fd00::1]:40004"],
        }
    )
    assert fps.problem() is None
    got = attribute(Reply(b"token=bb peer=10.9.0.2:51000", status=200), PODS, fingerprints=fps)
    assert (got.pod, got.method) == ("web-1", Method.FINGERPRINT)
    # Only an address is looked past, never other text in its place.
    assert fingerprint(Reply(b"token=bb peer=x1")) != fingerprint(Reply(b"token=bb peer=10.9.0.2:51000"))


@pytest.mark.parametrize(
    ("body", "too_deep"),
    [
        pytest.param(b"[" * 64 + b"]" * 64, False, id="64-deep"),
        pytest.param(b"[" * 65 + b"]" * 65, True, id="65-deep"),
        pytest.param(b"[]" * 8192, False, id="16-KiB-of-shallow-brackets"),
        pytest.param(b'"' + b'\\"' * 8191, False, id="16-KiB-unterminated-escapes"),
        pytest.param(b'["\\\\"]' * 2730, False, id="16-KiB-escaped-backslashes"),
        pytest.param(b'["' + b"[" * 16000 + b'"]', False, id="brackets-in-one-string"),
    ],
)
def test_json_depth_check_is_fast_on_any_body(body: bytes, too_deep: bool) -> None:
    started = time.perf_counter()
    got = attribute(Reply(body, status=200), PODS, rule=parse_rule("json:0"))
    elapsed = time.perf_counter() - started
    assert ("nested deeper" in (got.reason or "")) is too_deep
    assert elapsed < CATASTROPHIC_S, f"{elapsed * 1000:.1f} ms"


def test_matcher_memory_stays_bounded_and_answers_stay_the_same() -> None:
    matcher = Matcher(PODS)
    for i in range(3 * MEMO_ENTRIES):
        text = f'{{"pod": "web-{i % 12}", "peer": "10.9.0.1:{40000 + i}"}}'
        assert matcher.pods_in(text) == {f"web-{i % 12}"}
        assert len(matcher._memo) <= MEMO_ENTRIES
    long_text = "x" * (MEMO_CHARS + 1) + " web-3"
    assert matcher.pods_in(long_text) == matcher.pods_in(long_text) == {"web-3"}
    assert long_text not in matcher._memo
