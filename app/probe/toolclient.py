"""Probing from any pod with the client it already has: curl, wget (busybox's too), nc, python3 or bash.

The exec origin first runs one short detection (``detect_argv``) in the pod's container; it names which of
the tools exist. The run then sends every request from one more exec: a fixed POSIX sh loop (or a fixed
Python loop) that runs the chosen tool once per request and prints one line per request::

    TAG SEQ HEX RC MICROS

``TAG`` is a random token of the run (output without it is ignored), ``HEX`` the reply as hex (the first
``REPLY_CAP`` bytes; stdout and stderr of the tool together), ``RC`` the tool's exit status and ``MICROS``
how long it ran. The reply is data: it is decoded here, matched against the Service's endpoints like any
reply the dashboard reads itself (``app.probe.attribution``), and never reaches a shell.

No value from the cluster or the user is ever part of a script: the scripts are constants and the target
address, port and path travel as separate arguments (``"$1"`` … in sh, ``sys.argv`` in Python), so a path
or a name cannot become shell code. ``command_shape`` shows the single command a user can run by hand.

Pure: no Kubernetes client, no web framework.
"""

from __future__ import annotations

import enum
import math
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass

from app.probe.attribution import Reply
from app.probe.targets import ProbeProtocol

DETECT_TAG = "svcscope-tools"
REPLY_CAP = 2048  # bytes of a reply returned per request: the echo backends name their pod in the first few
ERROR_TEXT_CAP = 300  # of the tool's own message, as shown in an outcome's reason
# One line per request: REPLY_CAP bytes as hex plus the fixed fields (app.kube.actions caps output lines).
MAX_LINE = 2 * REPLY_CAP + 200
NO_SHELL = (
    "this container has no shell (sh), so svcscope cannot look for a client tool in it: pick another pod "
    "or use a probe pod"
)


class Tool(enum.StrEnum):
    SVCSCOPE = "svcscope"  # the echo client of svcscope's own image (python3 -m app.echo)
    CURL = "curl"
    WGET = "wget"
    NC = "nc"
    PYTHON = "python3"
    BASH = "bash"


# What each protocol can be sent with, best first.
PREFERENCE: dict[ProbeProtocol, tuple[Tool, ...]] = {
    ProbeProtocol.HTTP: (Tool.SVCSCOPE, Tool.CURL, Tool.WGET, Tool.PYTHON, Tool.NC, Tool.BASH),
    ProbeProtocol.TCP: (Tool.SVCSCOPE, Tool.NC, Tool.PYTHON, Tool.BASH),
    ProbeProtocol.UDP: (Tool.SVCSCOPE, Tool.PYTHON),
}
HELPERS = ("head", "od", "tr", "sleep", "date")  # what the sh loop uses besides the tool

# Prints "svcscope-tools" and every tool and helper found on PATH (one line). `command -v` is a builtin of
# every POSIX sh; python3 is also asked whether it has svcscope's client, by looking for its file: importing
# it would run the pod's own ``app`` package, whatever that is.
DETECT_SCRIPT = r"""
out=svcscope-tools
for t in curl wget nc python3 bash head od tr sleep date; do
  command -v "$t" >/dev/null 2>&1 && out="$out $t"
done
case " $out " in *" python3 "*)
  python3 -c 'import os, sys
sys.exit(not any(os.path.isfile(os.path.join(p or ".", "app/echo/client.py")) for p in sys.path))' \
    >/dev/null 2>&1 && out="$out svcscope" ;; esac
case " $out " in *" date "*)
  d=$(date +%s%N 2>/dev/null); case $d in ''|*[!0-9]*) ;; *) out="$out date-ns" ;; esac ;; esac
case " $out " in *" date-ns "*) ;; *)
  command -v adjtimex >/dev/null 2>&1 && case $(adjtimex 2>/dev/null) in *time.tv_usec:*)
    out="$out adjtimex-us" ;; esac ;; esac
echo "$out"
"""

# The request loop. Arguments: tool proto count timeout_s whole_timeout_s deadline_s tag host port path cap
# clock wrap. Each request's output (stdout and stderr) is capped by head, turned into hex by od and printed
# on the request's line; its exit status comes back through fd 5, the reply goes straight to fd 4 (stdout).
# Tools without a timeout of their own are stopped by a watchdog (tmo): busybox's timeout(1) checks once a
# second and holds the output open meanwhile, and busybox wget's own -T crashes in Debian's static build.
RUN_SCRIPT = r"""
tool=$1 proto=$2 count=$3 t=$4 ti=$5 dl=$6 tag=$7 host=$8 port=$9
shift 9
path=$1 cap=$2 clock=$3 wrap=$4
now() {
  case $clock in
    ns) T=$(date +%s%N); T=${T%???} ;;
    adj) T=$(adjtimex | { s=0 u=0; while read -r a b _; do case $a in
      time.tv_sec:) s=$b ;; time.tv_usec:) u=$b ;; esac; done; echo $((s * 1000000 + u)); }) ;;
    *) read -r u _ </proc/uptime; T=$(( ${u%.*}${u#*.} * 10000 )) ;;
  esac
}
tmo() {
  [ "$wrap" = yes ] || { "$@"; return; }
  exec 6<&0
  "$@" <&6 6<&- & p=$!
  exec 6<&-
  ( sleep "$ti" & s=$!; trap 'kill $s; exit 0' TERM; wait $s; kill "$p" ) >/dev/null 2>&1 0</dev/null & w=$!
  wait "$p"; r=$?; kill "$w" 2>/dev/null; return $r
}
req() {
  case $tool.$proto in
    curl.HTTP) curl -sS -i --max-time "$t" -H 'Connection: close' "http://$host:$port$path" ;;
    wget.HTTP) tmo wget -q -S -O - "http://$host:$port$path" ;;
    nc.HTTP) printf 'GET %s HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n\r\n' "$path" "$host" "$port" |
      tmo nc -w "$ti" "$host" "$port" ;;
    nc.TCP) printf 'svcscope-probe %s\n' "$i" | tmo nc -w "$ti" "$host" "$port" ;;
    bash.HTTP) tmo bash -c 'exec 3<>"/dev/tcp/$1/$2" || exit 7
      printf "GET %s HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n\r\n" "$3" "$1" "$2" >&3; cat <&3' \
      svcscope "$host" "$port" "$path" ;;
    bash.TCP) tmo bash -c 'exec 3<>"/dev/tcp/$1/$2" || exit 7; head -n 1 <&3' svcscope "$host" "$port" ;;
    *) echo "svcscope: no way to send $proto with $tool"; return 2 ;;
  esac
}
exec 4>&1
now; start=$T; i=1
while [ "$i" -le "$count" ]; do
  now; t0=$T
  if [ $((t0 - start)) -ge $((dl * 1000000)) ]; then echo "$tag stop deadline"; exit 0; fi
  printf '%s %s ' "$tag" "$i"
  rc=$( { { req 2>&1; echo "$?" >&5; } | head -c "$cap" | od -An -v -tx1 | tr -d ' \n' >&4; } 5>&1 )
  now
  printf ' %s %s\n' "${rc:-x}" "$((T - t0))"
  i=$((i + 1))
done
echo "$tag end"
"""

# The same loop in Python, for containers whose best tool is python3 (no sh tools needed).
PY_SCRIPT = r"""
import socket, sys, time
proto, count, t, dl, tag, host, port, path, cap = sys.argv[1:10]
count, t, dl, port, cap = int(count), float(t), float(dl), int(port), int(cap)
start = time.monotonic()
for i in range(1, count + 1):
    if time.monotonic() - start >= dl:
        print(tag, "stop deadline", flush=True)
        sys.exit(0)
    t0 = time.monotonic()
    out, rc = b"", 0
    try:
        if proto == "UDP":
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(t)
            s.sendto(b"svcscope-probe %d\n" % i, (host, port))
            out = s.recv(cap)
        else:
            s = socket.create_connection((host, port), timeout=t)
            if proto == "HTTP":
                s.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n"
                           % (path, host, port)).encode())
            else:
                s.sendall(b"svcscope-probe %d\n" % i)
            while len(out) < cap:
                chunk = s.recv(cap - len(out))
                if not chunk:
                    break
                out += chunk
                if proto == "TCP" and b"\n" in out:
                    break
        s.close()
    except socket.timeout:
        out, rc = b"python3: timed out", 28
    except OSError as e:
        out, rc = ("python3: " + (e.strerror or type(e).__name__)).encode(), 7
    us = int((time.monotonic() - t0) * 1e6)
    print(tag, i, out[:cap].hex(), rc, us, flush=True)
print(tag, "end", flush=True)
"""


class NoTool(Exception):
    """The container has nothing svcscope can send the requests with; the message says what was looked for."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Found:
    """What the detection saw in the container."""

    tools: frozenset[Tool]
    helpers: frozenset[str]
    date_ns: bool = False
    adjtimex_us: bool = False  # busybox's adjtimex prints the time in microseconds (its date has no %N)

    def usable(self, tool: Tool) -> bool:
        if tool in (Tool.SVCSCOPE, Tool.PYTHON):
            return tool in self.tools
        # The sh loop needs head, od and tr to return the reply on one line.
        return tool in self.tools and {"head", "od", "tr"} <= self.helpers


def detect_argv() -> list[str]:
    return ["sh", "-c", DETECT_SCRIPT]


def parse_detection(lines: Iterable[str]) -> Found | None:
    """The detection's answer (its one tagged line), or None when it printed none."""
    for line in lines:
        words = line.split()
        if not words or words[0] != DETECT_TAG:
            continue
        names = set(words[1:])
        tools = frozenset(t for t in Tool if t.value in names)
        helpers = frozenset(h for h in HELPERS if h in names)
        return Found(tools, helpers, date_ns="date-ns" in names, adjtimex_us="adjtimex-us" in names)
    return None


def choose(found: Found, protocol: ProbeProtocol) -> Tool:
    """The best tool the container has for ``protocol``; NoTool naming what was looked for."""
    wanted = PREFERENCE[protocol]
    for tool in wanted:
        if found.usable(tool):
            return tool
    looked = ", ".join("svcscope's echo client" if t is Tool.SVCSCOPE else t.value for t in wanted)
    have = sorted(t.value for t in found.tools)
    extra = ""
    if have and not {"head", "od", "tr"} <= found.helpers:
        missing = sorted({"head", "od", "tr"} - found.helpers)
        extra = f"; it has {', '.join(have)} but not {', '.join(missing)}, which svcscope needs beside it"
    return _raise_no_tool(f"this container has no client for {protocol.value}: looked for {looked}{extra}")


def _raise_no_tool(message: str) -> Tool:
    raise NoTool(message)


@dataclass(frozen=True, slots=True)
class Plan:
    """One run's requests from an exec: which tool, and the argv of the loop that runs it."""

    tool: Tool
    argv: list[str]
    shape: str  # one request as a user would type it into ``kubectl exec … --``
    clock: str  # how latency is measured inside the container, in words


def whole_seconds(timeout_s: float) -> int:
    """nc -w and timeout(1) take whole seconds (busybox's): the timeout rounded up."""
    return max(1, math.ceil(timeout_s))


def plan(
    found: Found,
    tool: Tool,
    protocol: ProbeProtocol,
    *,
    host: str,
    port: int,
    path: str,
    count: int,
    timeout_s: float,
    deadline_s: float,
    tag: str,
) -> Plan:
    """The loop's argv. ``host``/``port``/``path`` are the checked target (an IP, a number, a checked path);
    they still go only into arguments, never into script text."""
    ti = whole_seconds(timeout_s)
    dl = max(1, math.ceil(deadline_s))
    url = f"http://{_bracket(host)}:{port}{path}"
    if tool is Tool.PYTHON:
        argv = ["python3", "-c", PY_SCRIPT, protocol.value, str(count), f"{timeout_s:g}", str(dl), tag, host]
        argv += [str(port), path, str(REPLY_CAP)]
        shape = f"python3 -c 'socket: {_python_shape(protocol, host, port, path)}'"
        return Plan(tool, argv, shape, "Python's monotonic clock")
    wrap = "sleep" in found.helpers and tool in (Tool.WGET, Tool.NC, Tool.BASH)
    clock = "ns" if found.date_ns else "adj" if found.adjtimex_us else "uptime"
    argv = ["sh", "-c", RUN_SCRIPT, "svcscope", tool.value, protocol.value, str(count), f"{timeout_s:g}"]
    argv += [str(ti), str(dl), tag, _bracket(host), str(port), path, str(REPLY_CAP), clock]
    argv.append("yes" if wrap else "no")
    shape = command_shape(tool, protocol, host=host, port=port, path=path, url=url, ti=ti, t=timeout_s)
    if wrap:
        shape += f"  (stopped after {ti} s)"
    words = {
        "ns": "date +%s%N",
        "adj": "adjtimex, in microseconds (date has no %N)",
        "uptime": "/proc/uptime, in 10 ms steps (date has no %N, no adjtimex)",
    }[clock]
    return Plan(tool, argv, shape, f"the container's clock ({words}), around each command")


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _python_shape(protocol: ProbeProtocol, host: str, port: int, path: str) -> str:
    if protocol is ProbeProtocol.HTTP:
        return f"GET {path} from {_bracket(host)}:{port}"
    return f"{protocol.value} {_bracket(host)}:{port}"


def command_shape(
    tool: Tool, protocol: ProbeProtocol, *, host: str, port: int, path: str, url: str, ti: int, t: float
) -> str:
    """One request as a shell command line (quoted), to reproduce by hand."""
    q = shlex.quote
    request = f"GET {path} HTTP/1.1\\r\\nHost: {host}:{port}\\r\\nConnection: close\\r\\n\\r\\n"
    if tool is Tool.CURL:
        return f"curl -sS -i --max-time {t:g} -H 'Connection: close' {q(url)}"
    if tool is Tool.WGET:
        return f"wget -q -S -O - {q(url)}"
    if tool is Tool.NC and protocol is ProbeProtocol.HTTP:
        return f"printf {q(request)} | nc -w {ti} {q(host)} {port}"
    if tool is Tool.NC:
        return f"printf 'svcscope-probe 1\\n' | nc -w {ti} {q(host)} {port}"
    if protocol is ProbeProtocol.HTTP:
        script = f'exec 3<>/dev/tcp/{host}/{port}; printf "{request}" >&3; cat <&3'
    else:
        script = f"exec 3<>/dev/tcp/{host}/{port}; head -n 1 <&3"
    return f"bash -c {q(script)}"


# -- reading the loop's output ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    """One request's line: the tool's exit status, how long it ran, and what it printed (capped)."""

    seq: int
    rc: int | None  # None: the shell could not tell
    micros: int
    output: bytes


@dataclass(frozen=True, slots=True)
class Stop:
    """The loop's last line: ``end`` (all sent) or ``deadline`` (the rest not sent)."""

    deadline: bool


_HEX = re.compile(r"(?:[0-9a-f]{2})*")


def parse_line(line: str, tag: str) -> Line | Stop | None:
    """A tagged line of the loop; None for anything else (never raises)."""
    if len(line) > MAX_LINE:
        return None
    parts = line.rstrip("\r\n").split(" ")
    if not parts or parts[0] != tag:
        return None
    if parts[1:] == ["end"]:
        return Stop(deadline=False)
    if parts[1:] == ["stop", "deadline"]:
        return Stop(deadline=True)
    if len(parts) != 5:
        return None
    _, seq, hexed, rc, micros = parts
    if not (seq.isdigit() and micros.isdigit() and (rc.isdigit() or rc == "x")) or not _HEX.fullmatch(hexed):
        return None
    if len(hexed) > 2 * REPLY_CAP or len(seq) > 9 or len(rc) > 3 or len(micros) > 12:
        return None
    return Line(int(seq), int(rc) if rc != "x" else None, int(micros), bytes.fromhex(hexed))


@dataclass(frozen=True, slots=True)
class Result:
    """What one request got, read from its line: a reply to attribute, or the kind of failure."""

    reply: Reply | None
    error: str | None = None
    detail: str | None = None


# The tools' messages (curl, wget, nc, bash, python3; GNU and busybox) and the error kind each means.
_MESSAGES: tuple[tuple[re.Pattern[bytes], str], ...] = tuple(
    (re.compile(p, re.I), kind)
    for p, kind in (
        (rb"connection refused", "refused"),
        (rb"timed out|timeout", "timeout"),
        (rb"no route to host|network is unreachable|host is unreachable", "unreachable"),
        (rb"connection reset|reset by peer", "reset"),
        (rb"bad address|could not resolve|name or service not known|unable to resolve", "dns"),
        (rb"empty reply|connection closed|unexpected eof", "closed"),
    )
)
# curl's exit codes (man curl, EXIT CODES) that name a kind on their own.
_CURL_CODES = {6: "dns", 7: "refused", 28: "timeout", 52: "closed", 56: "reset", 8: "bad_response"}
_TIMEOUT_CODES = frozenset({124, 143})  # timeout(1)'s status; the watchdog's SIGTERM (128+15)
_TRUNCATED_CODES = frozenset({23, 141})  # curl's write error, SIGPIPE: head stopped reading at the cap
_WGET_STATUS = re.compile(rb"server returned error: HTTP/\d(?:\.\d)? (\d{3})")


def result_of(tool: Tool, protocol: ProbeProtocol, line: Line) -> Result:
    """The request's reply (HTTP head and body split, as the dashboard's own client does) or its error."""
    out, rc = line.output, line.rc
    full = len(out) >= REPLY_CAP
    if rc == 0 or (full and rc in _TRUNCATED_CODES):
        return _reply(tool, protocol, out)
    text = out[-ERROR_TEXT_CAP:].decode("utf-8", "replace").strip()
    detail = f"{tool.value} exited with {rc}" + (f": {text.splitlines()[-1]}" if text else "")
    if rc is not None and rc in _TIMEOUT_CODES:
        return Result(None, "timeout", detail)
    if tool is Tool.WGET and (m := _WGET_STATUS.search(out)):
        # busybox wget prints no body for a status >= 400: the reply is its headers (from -S).
        return Result(Reply(body=b"", headers=_wget_headers(out), status=int(m.group(1))))
    if tool is Tool.CURL and rc in _CURL_CODES and rc != 7:
        return Result(None, _CURL_CODES[rc], detail)
    for pattern, kind in _MESSAGES:
        if pattern.search(out[-ERROR_TEXT_CAP:]):
            return Result(None, kind, detail)
    if tool is Tool.CURL and rc == 7:
        return Result(None, "refused", detail)
    if rc is not None and rc > 128:
        return Result(None, "error", f"{tool.value} was killed by signal {rc - 128} ({detail})")
    return Result(None, "error", detail)


def _reply(tool: Tool, protocol: ProbeProtocol, out: bytes) -> Result:
    if protocol is not ProbeProtocol.HTTP:
        return Result(Reply(body=out.rstrip(b"\r\n")))
    if tool is Tool.WGET:
        headers = _wget_headers(out)
        status = _status_of(out.lstrip())
        body = b"\n".join(ln for ln in out.split(b"\n") if not ln.startswith(b"  "))
        return Result(Reply(body=body, headers=headers, status=status))
    head, sep, body = out.partition(b"\r\n\r\n")
    status = _status_of(head)
    if not sep or status is None:
        return Result(None, "bad_response", f"what {tool.value} printed is not an HTTP response")
    return Result(Reply(body=body, headers=_headers(head.split(b"\r\n")[1:]), status=status))


def _status_of(head: bytes) -> int | None:
    m = re.match(rb"HTTP/\d(?:\.\d)? (\d{3})", head)
    return int(m.group(1)) if m else None


def _headers(lines: Iterable[bytes]) -> tuple[tuple[str, str], ...]:
    out = []
    for raw in lines:
        name, sep, value = raw.decode("latin-1").partition(":")
        if sep and name.strip():
            out.append((name.strip().lower(), value.strip()))
    return tuple(out)


def _wget_headers(out: bytes) -> tuple[tuple[str, str], ...]:
    """wget -S prints the response's headers indented by two spaces (on stderr, before the body)."""
    return _headers(ln[2:].rstrip(b"\r") for ln in out.split(b"\n") if ln.startswith(b"  "))
