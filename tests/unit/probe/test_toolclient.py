"""Probing with the client a pod already has: which tool is found, the command each request runs (cluster
values only ever as arguments), and how the loop's lines become replies and error kinds."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from app.probe import toolclient as tc
from app.probe.targets import ProbeProtocol

pytestmark = pytest.mark.timeout(60)

HTTP, TCP, UDP = ProbeProtocol.HTTP, ProbeProtocol.TCP, ProbeProtocol.UDP
TAG = "svcscope-0123456789abcdef"
SH_HELPERS = "head od tr sleep date"


def found(words: str) -> tc.Found:
    parsed = tc.parse_detection(["some noise", f"{tc.DETECT_TAG} {words}", f"{tc.DETECT_TAG} curl"])
    assert parsed is not None
    return parsed


@pytest.mark.parametrize(
    ("words", "protocol", "tool"),
    [
        (f"curl wget nc python3 bash {SH_HELPERS}", HTTP, tc.Tool.CURL),
        (f"wget nc {SH_HELPERS}", HTTP, tc.Tool.WGET),
        (f"wget nc {SH_HELPERS}", TCP, tc.Tool.NC),
        (f"nc bash {SH_HELPERS}", HTTP, tc.Tool.NC),
        (f"bash {SH_HELPERS}", TCP, tc.Tool.BASH),
        ("python3", HTTP, tc.Tool.PYTHON),  # python3 needs no sh helpers
        (f"curl python3 {SH_HELPERS}", UDP, tc.Tool.PYTHON),
        (f"curl python3 svcscope {SH_HELPERS}", HTTP, tc.Tool.SVCSCOPE),  # svcscope's own image
        ("curl wget python3", HTTP, tc.Tool.PYTHON),  # curl cannot return its reply without head/od/tr
    ],
)
def test_the_best_tool_for_the_protocol(words: str, protocol: ProbeProtocol, tool: tc.Tool) -> None:
    assert tc.choose(found(words), protocol) is tool


@pytest.mark.parametrize(
    ("words", "clock"),
    [
        (f"curl {SH_HELPERS} date-ns", "date +%s%N"),
        (f"curl {SH_HELPERS} adjtimex-us", "adjtimex, in microseconds"),
        (f"curl {SH_HELPERS}", "/proc/uptime, in 10 ms steps"),
    ],
)
def test_the_finest_clock_the_container_has_times_the_requests(words: str, clock: str) -> None:
    p = tc.plan(
        found(words), tc.Tool.CURL, HTTP, host="198.19.0.50", port=80, path="/", count=1, timeout_s=1,
        deadline_s=5, tag=TAG,
    )  # fmt: skip
    assert clock in p.clock and p.argv[-2] in ("ns", "adj", "uptime")


def test_the_first_tagged_line_counts_and_unknown_words_are_ignored() -> None:
    f = found("curl rm-rf date-ns od")
    assert f.tools == {tc.Tool.CURL} and f.helpers == {"od"} and f.date_ns
    assert tc.parse_detection(["curl wget", "svcscope-toolsX curl"]) is None


@pytest.mark.parametrize(
    ("words", "protocol", "message"),
    [
        ("", HTTP, "no client for HTTP: looked for svcscope's echo client, curl, wget, python3, nc, bash"),
        (
            f"curl wget {SH_HELPERS}",
            TCP,
            "no client for TCP: looked for svcscope's echo client, nc, python3, bash",
        ),
        (f"nc bash {SH_HELPERS}", UDP, "no client for UDP: looked for svcscope's echo client, python3"),
        ("curl head", HTTP, "it has curl but not od, tr, which svcscope needs beside it"),
    ],
)
def test_no_usable_tool_says_what_was_looked_for(words: str, protocol: ProbeProtocol, message: str) -> None:
    with pytest.raises(tc.NoTool, match=message):
        tc.choose(found(words), protocol)


def plan(tool: tc.Tool, protocol: ProbeProtocol = HTTP, path: str = "/", **kw: object) -> tc.Plan:
    values: dict[str, object] = {
        "host": "198.19.0.50",
        "port": 80,
        "path": path,
        "count": 3,
        "timeout_s": 1.5,
        "deadline_s": 30.0,
        "tag": TAG,
    }
    values.update(kw)
    return tc.plan(found(f"curl wget nc python3 bash {SH_HELPERS}"), tool, protocol, **values)  # type: ignore[arg-type]


HOSTILE_PATH = "/$(touch${IFS}pwned)`touch${IFS}pwned2`;touch${IFS}pwned3|'\"&&x=1"


@pytest.mark.parametrize("tool", [tc.Tool.CURL, tc.Tool.WGET, tc.Tool.NC, tc.Tool.BASH, tc.Tool.PYTHON])
def test_cluster_values_are_arguments_never_script_text(tool: tc.Tool) -> None:
    p = plan(tool, path=HOSTILE_PATH)
    script = p.argv[2]
    assert script in (tc.RUN_SCRIPT, tc.PY_SCRIPT)  # a constant: nothing was put into it
    assert HOSTILE_PATH in p.argv[3:] and "198.19.0.50" in p.argv[3:]
    if tool is not tc.Tool.PYTHON:
        assert p.argv[:2] == ["sh", "-c"] and p.argv[3] == "svcscope"  # $0, then the arguments


def test_the_shape_to_reproduce_is_quoted_for_a_shell() -> None:
    shape = plan(tc.Tool.CURL, path="/a?b=1&c='2'").shape
    assert shape == (
        "curl -sS -i --max-time 1.5 -H 'Connection: close' 'http://198.19.0.50:80/a?b=1&c='\"'\"'2'\"'\"''"
    )
    assert plan(tc.Tool.WGET).shape == "wget -q -S -O - http://198.19.0.50:80/  (stopped after 2 s)"
    assert plan(tc.Tool.NC, TCP).shape.startswith("printf 'svcscope-probe 1\\n' | nc -w 2 198.19.0.50 80")
    assert "[fd00::5]:80" in plan(tc.Tool.CURL, host="fd00::5").shape


def hexed(data: bytes) -> str:
    return data.hex()


OK_REPLY = b'HTTP/1.1 200 OK\r\nX-Pod-Name: web-1\r\nConnection: close\r\n\r\n{"pod": "web-1"}\n'


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f"{TAG} 1 {hexed(b'hi')} 0 1234", tc.Line(1, 0, 1234, b"hi")),
        (f"{TAG} 7  28 2000000", tc.Line(7, 28, 2000000, b"")),
        (f"{TAG} 2 {hexed(b'x')} x 10", tc.Line(2, None, 10, b"x")),
        (f"{TAG} end", tc.Stop(deadline=False)),
        (f"{TAG} stop deadline", tc.Stop(deadline=True)),
        (f"{TAG} 1 zz 0 1", None),  # not hex
        (f"{TAG} 1 abc 0 1", None),  # odd hex
        (f"{TAG} -1 ab 0 1", None),
        (f"{TAG} 1 ab 0", None),
        (f"{TAG} 1 ab 0 1 extra", None),
        (f"other 1 {hexed(b'hi')} 0 1", None),  # a reply cannot print a line of the run: it lacks the tag
        (f"{TAG} 1 {'ab' * (tc.REPLY_CAP + 1)} 0 1", None),
        ("", None),
    ],
)
def test_loop_lines_are_parsed_strictly(line: str, expected: object) -> None:
    assert tc.parse_line(line, TAG) == expected


def result(tool: tc.Tool, out: bytes, rc: int | None, protocol: ProbeProtocol = HTTP) -> tc.Result:
    return tc.result_of(tool, protocol, tc.Line(1, rc, 1000, out))


def test_an_http_reply_is_split_into_status_headers_and_body() -> None:
    r = result(tc.Tool.CURL, OK_REPLY, 0)
    assert r.error is None and r.reply is not None
    assert r.reply.status == 200 and r.reply.header("x-pod-name") == "web-1"
    assert r.reply.body == b'{"pod": "web-1"}\n'


def test_wget_headers_come_from_its_server_response_lines() -> None:
    out = b"  HTTP/1.1 200 OK\n  X-Pod-Name: web-2\n  Content-Length: 5\nweb-2"
    r = result(tc.Tool.WGET, out, 0)
    assert r.reply is not None and r.reply.status == 200 and r.reply.header("x-pod-name") == "web-2"
    assert r.reply.body == b"web-2"
    failed = result(
        tc.Tool.WGET, b"  HTTP/1.1 404 Not Found\nwget: server returned error: HTTP/1.1 404 Not Found", 1
    )
    assert failed.error is None and failed.reply is not None and failed.reply.status == 404


def test_a_reply_cut_at_the_cap_is_still_a_reply() -> None:
    big = OK_REPLY + b"x" * tc.REPLY_CAP
    for rc in (23, 141):  # curl's write error, SIGPIPE: head stopped reading
        r = result(tc.Tool.CURL, big[: tc.REPLY_CAP], rc)
        assert r.error is None and r.reply is not None and r.reply.status == 200


@pytest.mark.parametrize(
    ("tool", "out", "rc", "kind"),
    [
        (
            tc.Tool.CURL,
            b"curl: (7) Failed to connect to 198.19.0.50 port 80: Connection refused",
            7,
            "refused",
        ),
        (tc.Tool.CURL, b"curl: (7) Failed to connect: No route to host", 7, "unreachable"),
        (tc.Tool.CURL, b"curl: (28) Operation timed out after 1000 milliseconds", 28, "timeout"),
        (tc.Tool.CURL, b"curl: (52) Empty reply from server", 52, "closed"),
        (tc.Tool.CURL, b"curl: (56) Recv failure: Connection reset by peer", 56, "reset"),
        (tc.Tool.CURL, b"curl: (6) Could not resolve host: x", 6, "dns"),
        (tc.Tool.WGET, b"wget: can't connect to remote host (198.19.0.50): Connection refused", 1, "refused"),
        (tc.Tool.WGET, b"wget: download timed out", 1, "timeout"),
        (tc.Tool.WGET, b"", 143, "timeout"),  # stopped by the loop's watchdog
        (tc.Tool.WGET, b"", 139, "error"),  # crashed
        (tc.Tool.NC, b"nc: can't connect to remote host (198.19.0.50): Connection refused", 1, "refused"),
        (
            tc.Tool.BASH,
            b"bash: connect: Connection refused\nbash: /dev/tcp/198.19.0.50/80: Connection refused",
            1,
            "refused",
        ),
        (tc.Tool.PYTHON, b"python3: timed out", 28, "timeout"),
        (tc.Tool.CURL, b"HTTP/1.1 200 OK\r\n", 0, "bad_response"),  # no end of the head
        (tc.Tool.CURL, b"SSH-2.0-OpenSSH\r\n\r\n", 0, "bad_response"),
        (tc.Tool.NC, b"whatever", None, "error"),
    ],
)
def test_exit_status_and_message_map_to_the_error_kinds(
    tool: tc.Tool, out: bytes, rc: int | None, kind: str
) -> None:
    r = result(tool, out, rc)
    assert r.reply is None and r.error == kind, r
    assert r.detail and tool.value in r.detail


def test_a_signal_is_named() -> None:
    assert "killed by signal 11" in (result(tc.Tool.WGET, b"", 139).detail or "")


def test_tcp_and_udp_replies_are_the_banner() -> None:
    r = result(tc.Tool.NC, b"pod=web-0 peer=198.18.0.9:4000\nsvcscope-probe 1\n", 0, TCP)
    assert r.reply is not None and r.reply.body == b"pod=web-0 peer=198.18.0.9:4000\nsvcscope-probe 1"


# -- the scripts themselves, run by a real sh ------------------------------------------------------------


FAKE_CURL = """#!/bin/sh
# Records its arguments, one per line, and answers like an HTTP server would.
for a in "$@"; do printf '%s\\n' "$a"; done >> "$ARGS_FILE"
printf 'HTTP/1.1 200 OK\\r\\nX-Pod-Name: web-0\\r\\n\\r\\nhello from web-0'
"""


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh")
def test_the_sh_loop_passes_a_hostile_path_to_the_tool_verbatim(tmp_path: Path) -> None:
    """The real loop in a real sh, with a stand-in curl: the path reaches curl as one argument, nothing
    in it runs, and every request gives one well-formed line."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "curl"
    fake.write_text(FAKE_CURL)
    fake.chmod(0o755)
    for helper in ("head", "od", "tr", "date", "sleep"):
        real = shutil.which(helper)
        assert real is not None, helper
        (bindir / helper).symlink_to(real)
    args_file = tmp_path / "args"
    p = plan(tc.Tool.CURL, path=HOSTILE_PATH, count=3)
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "ARGS_FILE": str(args_file)}
    proc = subprocess.run(
        p.argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30, check=False
    )
    assert proc.returncode == 0, proc.stderr
    lines = [tc.parse_line(line, TAG) for line in proc.stdout.splitlines()]
    assert lines[-1] == tc.Stop(deadline=False)
    replies = [x for x in lines if isinstance(x, tc.Line)]
    assert [x.seq for x in replies] == [1, 2, 3] and all(x.rc == 0 for x in replies)
    got = tc.result_of(tc.Tool.CURL, HTTP, replies[0])
    assert got.reply is not None and got.reply.body == b"hello from web-0"
    urls = [a for a in args_file.read_text().splitlines() if a.startswith("http://")]
    assert urls == [f"http://198.19.0.50:80{HOSTILE_PATH}"] * 3
    assert not list(tmp_path.glob("pwned*")) and not list(Path(os.getcwd()).glob("pwned*"))


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh")
def test_the_sh_loop_stops_at_its_deadline(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    slow = bindir / "curl"
    slow.write_text("#!/bin/sh\nsleep 1.2\nprintf 'HTTP/1.1 200 OK\\r\\n\\r\\nok'\n")
    slow.chmod(0o755)
    p = plan(tc.Tool.CURL, count=50, deadline_s=1.0)
    env = {"PATH": f"{bindir}:/usr/bin:/bin"}
    proc = subprocess.run(p.argv, capture_output=True, text=True, env=env, timeout=30, check=False)
    lines = [tc.parse_line(line, TAG) for line in proc.stdout.splitlines()]
    assert lines[-1] == tc.Stop(deadline=True)
    assert 1 <= sum(isinstance(x, tc.Line) for x in lines) < 50
