"""A real uvicorn process stops promptly on SIGTERM even while an SSE stream is open."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.netutil import free_port

ROOT = Path(__file__).resolve().parents[3]
# One open SSE stream, as a browser tab on the list page holds it.
STREAM_REQUEST = b"GET /streams/services HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n"
GRACEFUL_S = 30  # what uvicorn would wait for open responses without the signal hook


def _connect(port: int, deadline: float) -> socket.socket:
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=1)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # polling for the listener to appear, bounded by the deadline


def test_sigterm_ends_open_event_streams_and_exits_before_the_graceful_timeout() -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "tests.unit.web.serve_without_cluster:make",
         "--host", "127.0.0.1", "--port", str(port), "--timeout-graceful-shutdown", str(GRACEFUL_S),
         "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        conn = _connect(port, time.monotonic() + 20)
        conn.settimeout(10)
        conn.sendall(STREAM_REQUEST)
        first = conn.recv(4096)
        assert b" 200 " in first.split(b"\r\n", 1)[0] and b"text/event-stream" in first

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rest = b""
        while chunk := conn.recv(4096):  # the server ends the stream instead of holding it open
            rest += chunk
        returncode = proc.wait(timeout=GRACEFUL_S + 10)
        took = time.monotonic() - started
        conn.close()
        assert returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
        assert took < GRACEFUL_S / 3, f"shutdown took {took:.1f}s: the open stream held it up"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
