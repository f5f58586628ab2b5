"""The port-forward supervisor: the backoff, and restarts of a stand-in kubectl that dies or hangs up."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.plugin import PluginError
from app.plugin.supervise import Answer, Backoff, Forwarder, check, free_port

# Stands in for `kubectl port-forward`: serves /healthz on the port and records each start. Its first run
# answers two requests, then, as a forward whose pod is gone does, either exits ("exit") or keeps running
# and closes every connection without a word ("hangup"); later runs answer. "refuse" fails as kubectl
# does when the local port is taken.
FAKE_KUBECTL = r"""
import http.server, os, pathlib, sys
port, starts, mode = int(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
with starts.open("a") as fh:
    fh.write("start\n")
first = len(starts.read_text().splitlines()) == 1
if mode == "refuse":
    print(f"Unable to listen on port {port}: address already in use", flush=True)
    print("error: unable to listen on any of the requested ports", flush=True)
    sys.exit(1)
answered = 0
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global answered
        answered += 1
        if first and answered > 2:
            if mode == "exit":
                print("error: lost connection to pod", flush=True)
                os._exit(1)
            return  # hang up: the connection closes with no answer
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
print(f"Forwarding from 127.0.0.1:{port} -> 8080", flush=True)
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def test_backoff_doubles_up_to_its_cap_and_starts_over() -> None:
    backoff = Backoff(initial=0.25, factor=2, cap=3)
    assert [backoff.next_delay() for _ in range(7)] == [0.25, 0.5, 1, 2, 3, 3, 3]
    backoff.reset()
    assert backoff.next_delay() == 0.25
    assert Backoff(initial=5, cap=1).next_delay() == 1
    default = Backoff()
    assert [default.next_delay() for _ in range(6)] == [0.25, 0.5, 1, 2, 2, 2]  # within seconds, always


def test_nothing_listening_is_broken_not_slow() -> None:
    assert check(free_port(), timeout=5) is Answer.BROKEN


def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # polling, bounded by the deadline


class Supervised:
    def __init__(self, tmp_path: Path, mode: str) -> None:
        self.port = free_port()
        self.starts = tmp_path / "starts"
        self.logs: list[str] = []
        argv = [sys.executable, "-c", FAKE_KUBECTL, str(self.port), str(self.starts), mode]
        self.forwarder = Forwarder(
            argv, self.port, log=self.logs.append, backoff=Backoff(initial=0.05, cap=0.2), check_interval=0.1
        )
        self.stop = threading.Event()

    def started(self) -> int:
        return len(self.starts.read_text().splitlines()) if self.starts.exists() else 0


@pytest.fixture
def supervised(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Supervised]:
    sup = Supervised(tmp_path, request.param)
    thread = threading.Thread(target=sup.forwarder.supervise, args=(sup.stop,), daemon=True)
    try:
        assert sup.forwarder.start(sup.stop, timeout=30)
        thread.start()
        yield sup
    finally:
        sup.stop.set()
        if thread.is_alive():
            thread.join(30)
        sup.forwarder.close()
    assert not thread.is_alive()


@pytest.mark.parametrize("supervised", ["exit"], indirect=True)
def test_a_forward_that_exits_is_started_again(supervised: Supervised) -> None:
    until(lambda: supervised.started() == 2 and check(supervised.port) is Answer.OK, 30, "a second forward")
    assert supervised.forwarder.restarts == 1
    assert "kubectl: error: lost connection to pod" in supervised.logs
    assert any(
        "exited (1): error: lost connection to pod; restart 1 in 0.05 s" in line for line in supervised.logs
    )
    until(lambda: any("answering again" in line for line in supervised.logs), 30, "the recovery logged")


@pytest.mark.parametrize("supervised", ["hangup"], indirect=True)
def test_a_forward_that_carries_nothing_is_replaced(supervised: Supervised) -> None:
    until(lambda: supervised.started() == 2 and check(supervised.port) is Answer.OK, 30, "a second forward")
    assert supervised.forwarder.restarts == 1
    assert any(
        "no connection through the port-forward (3 checks in a row)" in line for line in supervised.logs
    )


def test_an_answer_no_retry_can_change_fails_at_once(tmp_path: Path) -> None:
    sup = Supervised(tmp_path, "refuse")
    with pytest.raises(PluginError, match="unable to listen on any of the requested ports"):
        sup.forwarder.start(sup.stop, timeout=60)
    assert sup.started() == 1


def test_stop_ends_the_supervision_and_the_forward(tmp_path: Path) -> None:
    sup = Supervised(tmp_path, "exit")
    assert sup.forwarder.start(sup.stop, timeout=30)
    pid = sup.forwarder.pid
    sup.stop.set()
    sup.forwarder.supervise(sup.stop)  # returns at once: stopped
    sup.forwarder.close()
    assert pid is not None and not Path(f"/proc/{pid}").exists()  # ended and reaped
    assert check(sup.port) is Answer.BROKEN
