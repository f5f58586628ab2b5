"""Keep a `kubectl port-forward` alive: start it, wait until the dashboard answers through it, and start it
again whenever it dies or stops carrying connections.

A port-forward is bound to one pod: it ends ("lost connection to pod") when that pod is replaced, when the
apiserver restarts or when the connection drops, and a forward to a pod that is gone may also stay up and
refuse every connection. Both are noticed (the process's exit at once; refused connections after a few
checks a second apart) and a new forward is started after a bounded backoff. A check that times out does
not count: the dashboard is busy, not gone, and a new forward would cut its open streams.

`scripts/demo.py` runs the plugin itself in the background for `make demo`.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import http.client
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from app.plugin import PluginError

CHECK_TIMEOUT_S = 2.0
POLL_S = 0.1  # how often the kubectl process is looked at
CHECK_INTERVAL_S = 1.0  # how often /healthz is asked through the forward
BROKEN_CHECKS = 3  # refused or reset connections in a row that mean the forward carries nothing
ATTEMPT_TIMEOUT_S = 15.0  # one start of kubectl until the dashboard answers through it
STEADY_S = 10.0  # a forward that worked this long starts the backoff from the beginning again
STOP_GRACE_S = 5.0

# Never through an HTTP proxy from the environment: the forward is on this machine's loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

Log = Callable[[str], None]


class Answer(enum.Enum):
    OK = "ok"  # /healthz answered 200
    HTTP = "http"  # another HTTP answer: the forward carries connections
    BROKEN = "broken"  # refused, reset or closed without an answer: nothing behind the forward
    SLOW = "slow"  # no answer in time: the dashboard may just be busy


def check(port: int, timeout: float = CHECK_TIMEOUT_S) -> Answer:
    """GET /healthz on 127.0.0.1:PORT."""
    try:
        with _OPENER.open(f"http://127.0.0.1:{port}/healthz", timeout=timeout) as resp:
            return Answer.OK if resp.status == 200 else Answer.HTTP
    except urllib.error.HTTPError as exc:
        exc.close()
        return Answer.HTTP
    except TimeoutError:
        return Answer.SLOW
    except urllib.error.URLError as exc:
        return Answer.SLOW if isinstance(exc.reason, TimeoutError) else Answer.BROKEN
    except (OSError, http.client.HTTPException):
        return Answer.BROKEN


def port_free(port: int) -> bool:
    """Can a listener bind 127.0.0.1:PORT? (SO_REUSEADDR, as kubectl binds: a closed connection's
    TIME_WAIT does not make a port busy.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port nothing listens on now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Backoff:
    """Delays before each restart: initial, doubled every time, never above cap; reset() starts over."""

    initial: float = 0.25
    factor: float = 2.0
    cap: float = 2.0
    _next: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.reset()

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self.cap, self._next * self.factor)
        return delay

    def reset(self) -> None:
        self._next = min(self.initial, self.cap)


# kubectl's answers that no retry can change: tell the user at once instead of trying for long.
FATAL = ("forbidden", "unable to listen", "address already in use")


class Forwarder:
    """One port-forward at a time to 127.0.0.1:port, started again whenever it fails."""

    def __init__(
        self,
        argv: Sequence[str],
        port: int,
        *,
        log: Log,
        backoff: Backoff | None = None,
        check: Callable[[int], Answer] = check,
        check_interval: float = CHECK_INTERVAL_S,
        attempt_timeout: float = ATTEMPT_TIMEOUT_S,
        steady: float = STEADY_S,
    ) -> None:
        self.argv = list(argv)
        self.port = port
        self.log = log
        self.backoff = backoff or Backoff()
        self.check = check
        self.check_interval = check_interval
        self.attempt_timeout = attempt_timeout
        self.steady = steady
        self.restarts = 0
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._said: collections.deque[str] = collections.deque(maxlen=5)

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}/"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    # -- one kubectl

    def _spawn(self) -> None:
        self._said.clear()
        proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            errors="replace",
        )  # fmt: skip
        self._proc = proc
        # kubectl writes a line per connection: keep reading, or a full pipe would block it.
        self._reader = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._reader.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.strip()
            if not line or line.startswith(("Handling connection for", "Forwarding from")):
                continue
            if "error copying from local connection" in line:  # a client closed its side early: not news
                continue
            self._said.append(line)
            self.log(f"kubectl: {shorter(line)}")

    def said(self) -> str:
        """kubectl's last words (its final line says why it ended: "error: lost connection to pod")."""
        return shorter(self._said[-1]) if self._said else "(nothing)"

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(STOP_GRACE_S)
            if self._reader is not None:
                self._reader.join(STOP_GRACE_S)
            if proc.stdout is not None:
                proc.stdout.close()

    def _attempt(self, stop: threading.Event) -> str | None:
        """Start kubectl and wait until the dashboard answers through it: None, or why it did not."""
        self._spawn()
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + self.attempt_timeout
        while not stop.is_set():
            if proc.poll() is not None:
                if self._reader is not None:
                    self._reader.join(STOP_GRACE_S)  # its last words
                return f"kubectl port-forward exited ({proc.returncode}): {self.said()}"
            if self.check(self.port) is Answer.OK:
                return None
            if time.monotonic() > deadline:
                self._kill()
                return f"no answer through the port-forward within {self.attempt_timeout:g} s"
            stop.wait(POLL_S)
        return "stopped"

    # -- the life cycle

    def start(self, stop: threading.Event, timeout: float) -> bool:
        """The first forward: True once the dashboard answers, False if stopped first. Keeps trying (with
        the backoff) until `timeout`; a PluginError with kubectl's words if it never answers or kubectl says
        something no retry can change (no permission, port taken)."""
        deadline = time.monotonic() + timeout
        while True:
            failure = self._attempt(stop)
            if failure is None:
                self.backoff.reset()
                return True
            if stop.is_set():
                return False
            self._kill()
            if any(word in failure.lower() for word in FATAL) or time.monotonic() > deadline:
                raise PluginError(failure)
            if stop.wait(self.backoff.next_delay()):
                return False

    def supervise(self, stop: threading.Event) -> None:
        """Until `stop` is set: watch the forward, start a new one when it fails."""
        broken = 0
        up_since = next_check = time.monotonic()
        while not stop.wait(POLL_S):
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                if self._reader is not None:
                    self._reader.join(STOP_GRACE_S)  # its last words
                self._recover(stop, f"kubectl port-forward exited ({code}): {self.said()}")
                broken = 0
                up_since = next_check = time.monotonic()
                continue
            now = time.monotonic()
            if now < next_check:
                continue
            next_check = now + self.check_interval
            broken = broken + 1 if self.check(self.port) is Answer.BROKEN else 0
            if broken >= BROKEN_CHECKS:
                self._recover(stop, f"no connection through the port-forward ({broken} checks in a row)")
                broken = 0
                up_since = next_check = time.monotonic()
            elif now - up_since >= self.steady:
                self.backoff.reset()

    def _recover(self, stop: threading.Event, reason: str) -> None:
        failed_at = time.monotonic()
        self._kill()
        while not stop.is_set():
            delay = self.backoff.next_delay()
            self.restarts += 1
            self.log(f"{reason}; restart {self.restarts} in {delay:.2f} s")
            if stop.wait(delay):
                return
            failure = self._attempt(stop)
            if failure is None:
                self.log(
                    f"answering again at {self.url}, {time.monotonic() - failed_at:.1f} s after the failure"
                )
                return
            if stop.is_set():
                return
            self._kill()
            reason = failure

    def close(self) -> None:
        self._kill()


def shorter(line: str, limit: int = 240) -> str:
    return line if len(line) <= limit else line[: limit - 1] + "…"


def stamped(write: Callable[[str], None], prefix: str) -> Log:
    """A log function that puts the time of day and a prefix before every line."""

    def log(message: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            write(f"{time.strftime('%H:%M:%S')} {prefix}: {message}\n")

    return log
