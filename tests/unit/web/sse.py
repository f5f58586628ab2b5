"""Helpers for the web tests: read Server-Sent Events from a streamed response, call into the app's loop."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi.testclient import TestClient


def call(client: TestClient, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn`` on the app's event loop (the cache and hub are not thread-safe)."""
    assert client.portal is not None
    return client.portal.call(fn, *args)


def events(lines: Iterator[str], count: int) -> list[tuple[str, str]]:
    """The next ``count`` (event, data) pairs, or fewer if the stream ends first."""
    out: list[tuple[str, str]] = []
    event, data = "", []
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and event:
            out.append((event, "\n".join(data)))
            event, data = "", []
            if len(out) == count:
                return out
    return out
