"""Which pod answered a probe (pure). Never guess: a wrong attribution is worse than none.

In order:
1. an explicit rule (``header:X-Pod-Name``, ``regex:You've hit (\\S+)``, ``json:pod`` or
   ``json:meta.host``) from the request or the Service annotation ``svcscope.io/pod-identity``;
2. automatic: exactly one current endpoint's pod name or pod IP appears in the reply, matched on
   token boundaries (``web-1`` never matches inside ``web-10``, ``10.0.0.1`` never inside ``10.0.0.12``);
3. fingerprint: each endpoint was probed directly first; a reply identical to exactly one pod's
   (stable, distinct) direct reply is that pod's;
4. otherwise unattributed, with the reason and a hint.

Rules come from users and from Service annotations, replies from any backend: both are hostile input.
``regex:`` rules run on RE2 (google-re2), whose matching time is linear in the text, so no pattern can
stall the event loop (Python's backtracking ``re`` needs 12 s for ``(a+)+$`` on 28 characters); patterns
RE2 cannot run (backreferences, lookaround) are refused when the run is created. Rules and automatic
matching read only the first MAX_SCAN_CHARS bytes of a reply, and ``json:`` rules refuse replies nested
deeper than MAX_JSON_DEPTH, found without recursion and reported as the reason a reply is unattributed.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import re2

MAX_RULE_LENGTH = 200
# The dashboard reads at most 16 KiB of a reply (app.probe.wire.BODY_CAP), and the identity of a backend
# sits at the start of its reply (a header, the first line, a top-level JSON field). RE2 would scan more in
# linear time, but there is nothing more to scan.
MAX_SCAN_CHARS = 16_384
# Deeper than any reply that names its pod; far below the depth at which json.loads runs out of stack.
MAX_JSON_DEPTH = 64
# A compiled rule keeps its automaton's cache for the life of the run, and up to 50 finished runs are kept:
# 1 MiB each (RE2's default is 8 MiB) bounds that at a few tens of MiB. A rule of 200 characters fits easily.
RE2_MAX_MEM = 1 << 20


class Method(enum.StrEnum):
    RULE = "rule"
    AUTO = "auto"
    FINGERPRINT = "fingerprint"


class RuleError(ValueError):
    pass


class UnreadableReply(Exception):
    """A reply that a rule refuses to read (e.g. JSON nested too deep); the message says why."""


@dataclass(frozen=True, slots=True)
class Reply:
    """What came back: HTTP headers (lower-case names) and body, or a TCP banner / UDP datagram."""

    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    status: int | None = None

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    def text(self) -> str:
        return self.body[:MAX_SCAN_CHARS].decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class Candidate:
    pod: str
    ip: str


@dataclass(frozen=True, slots=True)
class Attribution:
    pod: str | None
    method: Method | None = None
    reason: str | None = None
    hint: str | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    kind: str  # header | regex | json
    expr: str
    pattern: Any = field(default=None, compare=False)  # a compiled re2 pattern (the bindings are untyped)

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.expr}"

    def extract(self, reply: Reply) -> str | None:
        """The identity the rule finds in ``reply``, None if none; raises UnreadableReply."""
        if self.kind == "header":
            value = reply.header(self.expr)
            return value.strip() if value is not None else None
        if self.kind == "regex":
            assert self.pattern is not None
            m = self.pattern.search(reply.text())
            if m is None:
                return None
            value = m.group(1) if self.pattern.groups else m.group(0)
            return value.strip() if isinstance(value, str) else None
        body = reply.body[:MAX_SCAN_CHARS]
        if _json_too_deep(body, MAX_JSON_DEPTH):
            raise UnreadableReply(f"the reply is JSON nested deeper than {MAX_JSON_DEPTH} levels")
        try:
            doc: object = json.loads(body)
        except ValueError:
            return None
        for part in self.expr.split("."):
            if isinstance(doc, Mapping) and part in doc:
                doc = doc[part]
            elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
                doc = doc[int(part)]
            else:
                return None
        return doc.strip() if isinstance(doc, str) else None


def parse_rule(text: str) -> Rule:
    """``header:NAME`` | ``regex:PATTERN`` (group 1 is the identity, else the whole match) | ``json:a.b``."""
    text = text.strip()
    if len(text) > MAX_RULE_LENGTH:
        raise RuleError(f"identity rule longer than {MAX_RULE_LENGTH} characters")
    kind, sep, expr = text.partition(":")
    kind = kind.strip().lower()
    if not sep or not expr.strip():
        raise RuleError("identity rule must look like header:NAME, regex:PATTERN or json:FIELD")
    if kind == "header":
        expr = expr.strip()
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", expr):
            raise RuleError(f"{expr!r} is not a valid header name")
        return Rule("header", expr)
    if kind == "regex":
        return Rule("regex", expr, _compile_re2(expr))
    if kind == "json":
        expr = expr.strip()
        if any(not part for part in expr.split(".")):
            raise RuleError(f"invalid JSON field path {expr!r}")
        return Rule("json", expr)
    raise RuleError(f"unknown identity rule kind {kind!r}: use header, regex or json")


def _compile_re2(expr: str) -> Any:
    options = re2.Options()
    options.max_mem = RE2_MAX_MEM
    options.log_errors = False  # a refused rule is the user's error, reported to them, not a server log line
    try:
        return re2.compile(expr, options)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise RuleError(
            f"regex {expr!r} cannot be used: {detail}. Rules run on RE2 (linear time): no backreferences, "
            r"lookaround or possessive quantifiers; write \z for the end of text"
        ) from exc


# A JSON string, or an unterminated one up to the end. Every attempt that starts at a quote succeeds and
# nothing inside is tried twice (possessive), so this fixed pattern is linear even on Python's re.
_JSON_STRING = re.compile(rb'(?s)"(?:[^"\\]|\\.)*+(?:"|\\?\Z)')
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_DEPTH_STEP = [0] * 256
_DEPTH_STEP[ord("[")] = _DEPTH_STEP[ord("{")] = 1
_DEPTH_STEP[ord("]")] = _DEPTH_STEP[ord("}")] = -1


def _json_too_deep(data: bytes, limit: int) -> bool:
    """Whether arrays/objects in ``data`` nest deeper than ``limit``, without recursion (json.loads recurses
    per level): drop the strings, keep the brackets, take the running sum. Under 1 ms for 16 KiB."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False  # the common case, decided without a scan
    brackets = _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    return max(itertools.accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0) > limit


_NAME_CHARS = r"A-Za-z0-9_\-"
MEMO_ENTRIES = 128
MEMO_CHARS = 1024

# svcscope's echo backend also reports the client address it saw: ``peer=IP:PORT`` in a banner or datagram,
# ``"peer": "IP:PORT"`` in its JSON. That address is the client's, never the answering pod's, and it changes
# with every connection, so automatic matching and fingerprints look past it. A fixed pattern of ours with
# one character class: linear on any reply.
_ECHO_PEER = re.compile(r'((?<![A-Za-z0-9_-])peer=|"peer": ")[0-9A-Fa-f.:\[\]]+')
_ECHO_PEER_BYTES = re.compile(_ECHO_PEER.pattern.encode())


def _without_echo_peer(text: str) -> str:
    return _ECHO_PEER.sub(r"\1", text) if "peer" in text else text


class Matcher:
    """Finds current endpoints' pod names and IPs in a reply, on token boundaries."""

    def __init__(self, candidates: Iterable[Candidate]) -> None:
        self.by_token: dict[str, str] = {}
        for c in candidates:
            self.by_token[c.pod] = c.pod
            self.by_token[c.ip] = c.pod
        tokens = sorted(self.by_token, key=len, reverse=True)
        self._memo: dict[str, frozenset[str]] = {}
        self.regex: re.Pattern[str] | None = None
        if tokens:
            alternation = "|".join(re.escape(t) for t in tokens)
            # Not preceded by a name char or '.', not followed by a name char or ".<name char>"
            # (so "web-1." ends a sentence but "web-1.x", "web-10" and "10.0.0.12" are other tokens).
            self.regex = re.compile(
                rf"(?<![{_NAME_CHARS}.])(?:{alternation})(?![{_NAME_CHARS}]|\.[{_NAME_CHARS}])"
            )

    def pods_in(self, text: str) -> set[str]:
        if self.regex is None:
            return set()
        text = _without_echo_peer(text)
        # A backend's replies repeat once its client address is looked past, and so do header values:
        # remembering short texts saves a regex scan per reply. Bounded: MEMO_ENTRIES texts of MEMO_CHARS.
        found = self._memo.get(text)
        if found is None:
            found = frozenset(self.by_token[m.group(0)] for m in self.regex.finditer(text))
            if len(text) <= MEMO_CHARS:
                if len(self._memo) >= MEMO_ENTRIES:
                    self._memo.clear()
                self._memo[text] = found
        return set(found)

    def pod_for(self, value: str) -> str | None:
        return self.by_token.get(value)


def fingerprint(reply: Reply) -> str:
    """Content identity of a reply: status + body (headers like Date vary per request, and so does the
    client address svcscope's echo backend reports)."""
    body = _ECHO_PEER_BYTES.sub(rb"\1", reply.body) if b"peer" in reply.body else reply.body
    h = hashlib.sha256()
    h.update(str(reply.status).encode())
    h.update(b"\0")
    h.update(body)
    return h.hexdigest()[:16]


@dataclass(slots=True)
class Fingerprints:
    """Direct replies per pod. Usable only when each pod's replies were stable and all pods differ."""

    by_pod: dict[str, set[str]] = field(default_factory=dict)

    def add(self, pod: str, reply: Reply) -> None:
        self.by_pod.setdefault(pod, set()).add(fingerprint(reply))

    def problem(self) -> str | None:
        if not self.by_pod:
            return "no endpoint could be probed directly"
        unstable = sorted(p for p, fps in self.by_pod.items() if len(fps) != 1)
        if unstable:
            return f"direct replies of {', '.join(unstable)} vary between requests"
        owners: dict[str, list[str]] = {}
        for pod, fps in self.by_pod.items():
            owners.setdefault(next(iter(fps)), []).append(pod)
        shared = [sorted(pods) for pods in owners.values() if len(pods) > 1]
        if shared:
            return "pods " + "; ".join(", ".join(g) for g in shared) + " give identical replies"
        return None

    def owner(self, reply: Reply) -> str | None:
        fp = fingerprint(reply)
        owners = [pod for pod, fps in self.by_pod.items() if fp in fps]
        return owners[0] if len(owners) == 1 else None


HINT_RULE = (
    "make the backend reveal its pod (e.g. a header or body field from the Downward API env POD_NAME) "
    "and set the Service annotation svcscope.io/pod-identity (header:NAME, regex:PATTERN or json:FIELD)"
)


def attribute(
    reply: Reply,
    candidates: Sequence[Candidate],
    *,
    rule: Rule | None = None,
    fingerprints: Fingerprints | None = None,
    matcher: Matcher | None = None,
    auto: bool = True,
) -> Attribution:
    """The pod that sent ``reply``, among the current endpoints ``candidates``, or why unknown."""
    matcher = matcher or Matcher(candidates)
    if rule is not None:
        try:
            value = rule.extract(reply)
        except UnreadableReply as exc:
            return Attribution(
                None, reason=f"rule {rule.label}: {exc}", hint="the backend's reply is not usable"
            )
        if value is None:
            return Attribution(None, reason=f"rule {rule.label} found nothing in the reply", hint=HINT_RULE)
        pod = matcher.pod_for(value)
        if pod is None:
            return Attribution(
                None,
                reason=f"rule {rule.label} gave {value[:80]!r}, which is no current endpoint's pod or IP",
                hint="the rule must yield the pod name or pod IP",
            )
        return Attribution(pod, Method.RULE)
    found: set[str] = set()
    if auto:
        for _, value in reply.headers:
            found |= matcher.pods_in(value)
        found |= matcher.pods_in(reply.text())
    if len(found) == 1:
        return Attribution(next(iter(found)), Method.AUTO)
    if len(found) > 1:
        return Attribution(
            None,
            reason=f"reply names several endpoints ({', '.join(sorted(found))})",
            hint="set an explicit identity rule",
        )
    if fingerprints is not None:
        problem = fingerprints.problem()
        if problem is None:
            owner = fingerprints.owner(reply)
            if owner is not None:
                return Attribution(owner, Method.FINGERPRINT)
            return Attribution(
                None,
                reason="reply matches no endpoint's direct reply (fingerprint)",
                hint="the backend's reply varies or a new pod has not been fingerprinted yet",
            )
        return Attribution(None, reason=f"no pod name or IP in the reply and {problem}", hint=HINT_RULE)
    return Attribution(None, reason="no current endpoint's pod name or IP in the reply", hint=HINT_RULE)
