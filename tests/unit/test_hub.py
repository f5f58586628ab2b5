from __future__ import annotations

import asyncio

from app.hub import EventHub


async def test_changes_are_filtered_and_coalesced():
    hub = EventHub(coalesce_s=0.05)
    with hub.subscribe(lambda c: c != "ignored") as sub:
        hub.publish("ignored")
        assert sub.notifications == 0
        for i in range(100):
            hub.publish(i)
        assert await sub.next() is True  # one wake-up for a burst of 100 changes
        hub.publish("again")
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await sub.next() is True
        assert loop.time() - start >= 0.04  # rate limited: not before the coalescing interval
    assert hub.subscriber_count == 0


async def test_close_ends_waiting_and_new_subscriptions():
    hub = EventHub()
    sub = hub.subscribe()
    waiter = asyncio.create_task(sub.next())
    hub.close()
    assert await asyncio.wait_for(waiter, 1) is False
    late = hub.subscribe()
    assert late.closed and await late.next() is False
