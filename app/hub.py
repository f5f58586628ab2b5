"""Event hub: fans cache (and probe) changes out to live streams, coalesced (pure asyncio).

Producers call :meth:`EventHub.publish` (synchronously, from the event loop). Each SSE stream owns
a :class:`Subscription` with a filter; ``await sub.next()`` returns once something it cares about
changed — at most once per ``coalesce_s`` however many changes arrived — and returns False when
the hub closes (application shutdown), so streams end instead of holding the server open.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

Filter = Callable[[Any], bool]


class Subscription:
    def __init__(self, hub: EventHub, wants: Filter | None, coalesce_s: float) -> None:
        self._hub = hub
        self._wants = wants
        self._coalesce_s = coalesce_s
        self._pending = asyncio.Event()
        self._closed = False
        self._last = float("-inf")
        self.notifications = 0

    def offer(self, change: Any) -> None:
        if self._closed:
            return
        if self._wants is None or self._wants(change):
            self.notifications += 1
            self._pending.set()

    def close(self) -> None:
        self._closed = True
        self._pending.set()

    @property
    def closed(self) -> bool:
        return self._closed

    async def next(self) -> bool:
        """Wait for relevant changes; True when there are some, False once closed."""
        await self._pending.wait()
        if self._closed:
            return False
        wait = self._last + self._coalesce_s - time.monotonic()
        if wait > 0:  # rate limit: changes arriving meanwhile are merged into this one
            await asyncio.sleep(wait)
        self._pending.clear()
        self._last = time.monotonic()
        return not self._closed

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._hub.unsubscribe(self)


class EventHub:
    def __init__(self, *, coalesce_s: float = 0.25) -> None:
        self.coalesce_s = coalesce_s
        self._subs: set[Subscription] = set()
        self._closed = False
        self.published = 0

    def publish(self, change: Any) -> None:
        self.published += 1
        for sub in tuple(self._subs):
            sub.offer(change)

    def subscribe(self, wants: Filter | None = None) -> Subscription:
        sub = Subscription(self, wants, self.coalesce_s)
        if self._closed:
            sub.close()
        else:
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        sub.close()

    def close(self) -> None:
        """End every subscription (their streams finish) and refuse new ones."""
        self._closed = True
        for sub in tuple(self._subs):
            sub.close()
        self._subs.clear()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)
