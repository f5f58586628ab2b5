"""Sends a run's requests to the ClusterIP from this process (asyncio) and records each outcome.

One task per in-flight request slot (``concurrency`` workers sharing one counter), a new connection
per request unless ``reuse``. ``Channel`` is the one place that knows how each protocol exchanges a
request and a reply; the workers and the per-pod calibration both use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from app.probe import wire
from app.probe.attribution import Reply
from app.probe.run import ENDPOINTS_MAX_AGE_S, Run, sample_of
from app.probe.spec import ProbeSpec
from app.probe.stats import Outcome
from app.probe.targets import ForbiddenAddress, ProbeProtocol

log = logging.getLogger(__name__)

Dial = Callable[[str, int], tuple[str, int]]
# Failures that mean "nothing listens behind the Service" when no endpoint is ready.
NO_ENDPOINT_KINDS = frozenset({"refused", "timeout", "unreachable"})


class Channel:
    """A socket to one address: opened on first use, reopened once it cannot be reused."""

    __slots__ = (
        "_conn",
        "_host",
        "_keep_alive",
        "_next_id",
        "_port",
        "_spec",
        "_udp",
        "host_header",
        "ident",
    )

    def __init__(
        self,
        host: str,
        port: int,
        spec: ProbeSpec,
        *,
        host_header: str,
        keep_alive: bool,
        next_id: Callable[[], int],
    ) -> None:
        self._host, self._port, self._spec = host, port, spec
        self._keep_alive = keep_alive
        self._next_id = next_id
        self.host_header = host_header
        self._conn: wire.Connection | None = None
        self._udp: wire.UdpSocket | None = None
        self.ident = 0  # the connection the last exchange used (0: none was opened)

    async def exchange(self, seq: int) -> Reply:
        spec = self._spec
        self.ident = 0
        if spec.protocol is ProbeProtocol.UDP:
            if self._udp is None:
                self._udp = await wire.open_udp(self._host, self._port, self._next_id())
            self.ident = self._udp.ident
            return await self._udp.exchange(seq)
        conn = self._conn
        if conn is None or not conn.reusable:
            conn = self._conn = await wire.open_connection(self._host, self._port, self._next_id())
        self.ident = conn.ident
        if spec.protocol is ProbeProtocol.TCP:
            return await wire.tcp_exchange(conn, seq)
        return await wire.http_exchange(
            conn,
            method=spec.method,
            path=spec.path,
            host_header=self.host_header,
            keep_alive=self._keep_alive,
        )

    def close(self) -> None:
        for sock in (self._conn, self._udp):
            if sock is not None:
                try:
                    sock.close()
                except Exception as exc:  # a broken socket: the exchange already recorded its error
                    log.debug("closing connection %d: %r", sock.ident, exc)
        self._conn = self._udp = None


def failure_kind(exc: BaseException, run: Run, failure: wire.ProbeFailure | None = None) -> str:
    """The error kind of a failed request; "no_endpoints" when nothing could answer (no Ready endpoint)."""
    kind = (failure or wire.classify(exc)).kind
    if kind in NO_ENDPOINT_KINDS and not any(b.ready for b in run.current()):
        return "no_endpoints"
    return kind


async def exchange_once(run: Run, ip: str, port: int, seq: int, dial: Dial) -> Reply:
    """One request on a fresh connection to ``ip:port`` (a pod, for calibration)."""
    host, port = dial(ip, port)
    channel = Channel(
        host,
        port,
        run.spec,
        host_header=wire.host_header(run.target.address, run.target.port.port),
        keep_alive=False,
        next_id=lambda: 0,
    )
    try:
        return await channel.exchange(seq)
    finally:
        channel.close()


async def worker(run: Run, dial: Dial, slots: asyncio.Semaphore | None = None) -> None:
    """Send requests until the run's count is issued; every outcome goes to ``run.add``. With ``slots``
    (shared by the process's runs), each request first waits for a slot; its latency starts once it has
    one."""
    spec = run.spec
    clock = run.clock
    host, port = dial(run.target.address, run.target.port.port)
    channel = Channel(
        host,
        port,
        spec,
        host_header=wire.host_header(run.target.address, run.target.port.port),
        keep_alive=spec.reuse,
        next_id=run.next_connection,
    )
    pacing = spec.pacing if spec.pacing.paced else None
    gate: contextlib.AbstractAsyncContextManager[Any] = slots or contextlib.nullcontext()
    try:
        while (seq := run.next_seq()) is not None:
            if pacing is not None and (wait := pacing.wait_before(seq)) > 0:
                await asyncio.sleep(wait)  # one worker: the wait is between this request and the last
            run.current(ENDPOINTS_MAX_AGE_S)
            if run.forbidden:
                raise ForbiddenAddress(run.forbidden)
            failed: Exception | None = None
            async with gate:
                t0 = clock()
                try:
                    async with asyncio.timeout(spec.timeout_s):
                        reply = await channel.exchange(seq)
                except Exception as exc:
                    failed = exc
                latency = (clock() - t0) * 1000.0
            at_ms = (t0 - run.started) * 1000.0
            if failed is not None:
                failure = wire.classify(failed)
                kind = failure_kind(failed, run, failure)
                run.add(
                    Outcome(
                        seq, None, kind, latency, channel.ident, reason=failure.detail or None, at_ms=at_ms
                    )
                )
                channel.close()
                continue
            who = run.attribute(reply)
            outcome = Outcome(
                seq,
                who.pod,
                None,
                latency,
                channel.ident,
                reason=who.reason,
                method=who.method.value if who.method else None,
                status=reply.status,
                at_ms=at_ms,
            )
            run.add(outcome, sample=sample_of(reply) if run.wants_sample(outcome) else None)
            if not spec.reuse:
                channel.close()
    finally:
        channel.close()
