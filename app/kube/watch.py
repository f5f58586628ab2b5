"""List, then watch: keeps :class:`~app.kube.cache.ServiceCache` in step with the apiserver.

One :class:`Watcher` per (resource, namespace scope). Its loop:

1. list (paginated) and replace the scope in the cache atomically; mark it synced;
2. watch from the list's resourceVersion with ``allowWatchBookmarks``; every event (and bookmark)
   moves the resourceVersion on; when the server ends the watch (``timeoutSeconds``) watch again;
3. ``410 Gone`` (as HTTP status or as an ``ERROR`` event) -> back to 1 (kubernetes_asyncio's own
   ``Watch`` retries a 410 only once, so re-listing is done here);
4. any other failure, or nothing received for ``inactivity_s`` -> reconnect after a capped
   exponential backoff with jitter; ``403 Forbidden`` is recorded on the cache as a visible
   problem (and retried slowly, in case RBAC is granted later), never raised;
5. with a :class:`~app.kube.freshness.Liveness` check: a connection failure while the apiserver does
   not answer waits for its next answer instead of the backoff (so a restarted apiserver is used
   within moments), the backoff only grows while the apiserver answers and the watch still fails,
   and a watch that was open through an outage is restarted with a fresh list once it is over.

The Kubernetes side is behind :class:`EventSource`, so the state machine is tested against a fake.

Long on purpose: listing, watching, bookmarks, re-lists after 410 or an outage, and the reconnect policy
are one state machine per watch; read apart they would hide how one step hands over to the next.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from app.kube import convert
from app.kube.cache import ALL_NAMESPACES, Kind, ServiceCache
from app.kube.freshness import Liveness, WatchAge, watch_age
from app.kube.metrics import WatchMetrics

log = logging.getLogger(__name__)

RawEvent = Mapping[str, Any]


class ApiError(Exception):
    """A non-2xx answer of the apiserver (or an ERROR watch event carrying a Status)."""

    def __init__(self, status: int, reason: str = "", message: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}".strip())
        self.status = status
        self.reason = reason
        self.message = message

    @classmethod
    def from_status(cls, status: Mapping[str, Any], default_code: int = 500) -> ApiError:
        return cls(
            int(status.get("code") or default_code),
            str(status.get("reason") or ""),
            str(status.get("message") or ""),
        )


class Gone(Exception):
    """The resourceVersion we watch from is too old (HTTP 410): re-list."""


@dataclass(frozen=True, slots=True)
class ListResult:
    items: list[Mapping[str, Any]]
    resource_version: str


class EventSource(Protocol):
    """What a watcher needs from the apiserver."""

    async def list(self, kind: Kind, namespace: str) -> ListResult:
        """All objects (every page); raises :class:`ApiError`."""
        ...

    def watch(
        self, kind: Kind, namespace: str, resource_version: str, timeout_s: int
    ) -> AsyncIterator[RawEvent]:
        """Raw watch events ``{"type": ..., "object": {...}}`` until the server ends the stream."""
        ...


@dataclass(frozen=True, slots=True)
class WatchConfig:
    timeout_s: int = 300  # server-side timeoutSeconds per watch request
    # Reconnect when nothing, not even a bookmark (about one a minute), arrived for this long.
    inactivity_s: float = 90.0
    backoff_base_s: float = 0.25
    backoff_max_s: float = 30.0
    forbidden_retry_s: float = 60.0


def backoff_delay(attempt: int, config: WatchConfig, rand: Callable[[], float] = random.random) -> float:
    """Capped exponential backoff with jitter: ``min(max, base * 2**attempt) * [0.5, 1)``."""
    ceiling: float = min(config.backoff_max_s, config.backoff_base_s * float(2 ** min(attempt, 30)))
    return ceiling * (0.5 + rand() / 2)


def _scope_text(kind: Kind, scope: str) -> str:
    return (
        f"{kind.value} in all namespaces" if scope == ALL_NAMESPACES else f"{kind.value} in namespace {scope}"
    )


def forbidden_message(kind: Kind, scope: str, err: ApiError) -> str:
    where = "cluster-wide" if scope == ALL_NAMESPACES else f"in namespace {scope!r}"
    hint = (
        " Grant get/list/watch on this resource, or limit svcscope to namespaces it may read"
        " with SVCSCOPE_NAMESPACES."
        if scope == ALL_NAMESPACES
        else " Grant get/list/watch on it in that namespace, or remove it from SVCSCOPE_NAMESPACES."
    )
    return (
        f"Forbidden: svcscope may not list/watch {kind.value} {where} (RBAC).{hint}"
        f" Server said: {err.message}"
    )


class Watcher:
    """Keeps one (resource, scope) of the cache current. ``run()`` only returns when cancelled."""

    def __init__(
        self,
        source: EventSource,
        cache: ServiceCache,
        kind: Kind,
        scope: str = ALL_NAMESPACES,
        *,
        config: WatchConfig | None = None,
        metrics: WatchMetrics | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        liveness: Liveness | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.cache = cache
        self.kind = kind
        self.scope = scope
        self.config = config or WatchConfig()
        self.metrics = metrics
        self._sleep = sleep
        self._rand = rand
        self.liveness = liveness
        self.clock = clock
        self.resource_version: str | None = None
        self.attempt = 0  # drives the backoff
        self.failures = 0  # in a row, whatever the wait: a second one shows a problem
        self.lists = 0
        self.last_seen: float | None = None  # last list, event or bookmark (monotonic)
        self.streaming_since: float | None = None  # a watch request is open since then
        self._timeout: asyncio.Timeout | None = None  # of the read in progress, to interrupt it
        self._interrupted: str | None = None
        if liveness is not None:
            liveness.on_recovery(self._recovered)

    @property
    def name(self) -> str:
        return f"watch-{self.kind.value}-{self.scope or 'all'}"

    def _restart(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.restarts.labels(self.kind.value, reason).inc()

    async def run(self) -> None:
        while True:
            await self.step()

    def age(self, now: float | None = None) -> WatchAge:
        """How current this watch's part of the cache is (see ``app.kube.freshness.watch_age``)."""
        live = self.liveness
        return watch_age(
            resource=self.kind.value,
            scope=self.scope,
            last_seen=self.last_seen,
            streaming_since=self.streaming_since,
            last_ok=live.last_ok if live is not None else self.clock(),
            now=self.clock() if now is None else now,
            stale_after_s=live.config.stale_after_s if live is not None else float("inf"),
        )

    def interrupt(self, reason: str) -> None:
        """End the watch stream being read (if any) and list afresh."""
        self._interrupted = reason
        self.resource_version = None
        if self._timeout is not None:
            self._timeout.reschedule(asyncio.get_running_loop().time())

    def _recovered(self, failing_since: float) -> None:
        # A stream that lived through the outage may be dead without knowing it, and events may be
        # missing: whatever has not heard from the apiserver since the outage began starts over.
        if self.last_seen is None or self.last_seen < failing_since:
            self.interrupt("the apiserver answers again after an outage")

    async def step(self) -> None:
        """One list-or-watch round including the wait after a failure (the unit tests drive this)."""
        try:
            if self.resource_version is None:
                await self._list()
            received = await self._watch(self.resource_version or "")
            self._restart("closed")  # the server ended the watch (timeoutSeconds): watch again
            if not received:  # an empty stream again and again must not become a hot loop
                await self._backoff(quick=True)
        except Gone:
            log.warning("%s: resourceVersion %s gone (410), re-listing", self.name, self.resource_version)
            self.resource_version = None
            self._restart("gone")
            await self._backoff(quick=True)
        except ApiError as err:
            if err.status == 410:
                log.warning(
                    "%s: resourceVersion %s gone (HTTP 410), re-listing", self.name, self.resource_version
                )
                self.resource_version = None
                self._restart("gone")
                await self._backoff(quick=True)
            elif err.status == 403:
                self._restart("forbidden")
                self.cache.set_problem(
                    self.kind, self.scope, forbidden_message(self.kind, self.scope, err), forbidden=True
                )
                log.warning("%s: %s", self.name, err)
                await self._sleep(self.config.forbidden_retry_s * (0.5 + self._rand() / 2))
            else:
                await self._failed("error", f"apiserver answered {err}")
        except TimeoutError:
            if self._interrupted is not None:
                log.info("%s: %s, re-listing", self.name, self._interrupted)
                self._interrupted = None
                self._restart("interrupted")
                return
            await self._failed(
                "timeout", f"nothing received for {self.config.inactivity_s:.0f} s", unreachable=True
            )
        except (OSError, ValueError, RuntimeError) as err:  # connection refused/reset, bad JSON ...
            await self._failed("error", f"{type(err).__name__}: {err}", unreachable=True)
        except Exception as err:  # aiohttp's ClientError and the like: never let the watch die
            await self._failed("error", f"{type(err).__name__}: {err}", unreachable=True)
        finally:
            self._interrupted = None

    async def _failed(self, reason: str, text: str, *, unreachable: bool = False) -> None:
        self._restart(reason)
        delay = backoff_delay(self.attempt, self.config, self._rand)
        # No answer at all (refused, reset, timed out): if the apiserver is down, waiting out a backoff
        # only delays recovery; wait for it to answer again instead. The backoff still bounds the wait,
        # and grows only while the apiserver answers and the watch keeps failing.
        down = unreachable and self.liveness is not None and not await self.liveness.check()
        when = "once the apiserver answers" if down else f"in {delay:.1f} s"
        message = f"Watch of {_scope_text(self.kind, self.scope)} interrupted ({text}); retrying {when}"
        log.warning("%s: %s", self.name, message)
        if self.failures >= 1:  # one blip is not worth a banner
            self.cache.set_problem(self.kind, self.scope, message)
        self.failures += 1
        if down:
            assert self.liveness is not None
            self.attempt = 0  # the backoff counts failures since the apiserver came back
            await self._until_answer(self.liveness, max(delay, self.config.backoff_max_s))
            return
        self.attempt += 1
        await self._sleep(delay)

    async def _until_answer(self, liveness: Liveness, limit_s: float) -> None:
        try:
            async with asyncio.timeout(limit_s):
                await liveness.next_ok()
        except TimeoutError:
            pass

    async def _backoff(self, *, quick: bool) -> None:
        if quick and self.attempt == 0:
            self.attempt += 1
            return
        delay = backoff_delay(self.attempt, self.config, self._rand)
        self.attempt += 1
        await self._sleep(delay)

    async def _list(self) -> None:
        result = await self.source.list(self.kind, self.scope)
        objects: list[Any] = []
        for raw in result.items:
            try:
                objects.append(self._convert(raw))
            except Exception:
                log.exception("%s: cannot convert %s", self.name, convert.object_key(raw))
        self.cache.replace(self.kind, self.scope, objects)
        self.cache.mark_synced(self.kind, self.scope)
        self.resource_version = result.resource_version
        self.last_seen = self.clock()
        self.failures = 0
        self.lists += 1
        if self.metrics is not None:
            self.metrics.lists.labels(self.kind.value).inc()
        log.info(
            "%s: listed %d objects at resourceVersion %s", self.name, len(objects), self.resource_version
        )

    def _convert(self, raw: Mapping[str, Any]) -> Any:
        if self.kind is Kind.SERVICES:
            return (convert.service_from_api(raw), convert.strip_for_display(raw))
        if self.kind is Kind.ENDPOINTSLICES:
            return convert.slice_from_api(raw)
        if self.kind is Kind.NODES:
            return convert.node_from_api(raw)
        return convert.pod_from_api(raw)

    async def _watch(self, resource_version: str) -> bool:
        stream = self.source.watch(self.kind, self.scope, resource_version, self.config.timeout_s)
        iterator = aiter(stream)
        first = True
        self.streaming_since = self.clock()
        try:
            while True:
                try:
                    async with asyncio.timeout(self.config.inactivity_s) as self._timeout:
                        event = await anext(iterator)
                except StopAsyncIteration:
                    return not first
                finally:
                    self._timeout = None
                self.last_seen = self.clock()
                if first:
                    first = False
                    self.attempt = self.failures = 0
                    if self.cache.status(self.kind, self.scope).problem is not None:
                        self.cache.set_problem(self.kind, self.scope, None)
                self._handle(event)
        finally:
            self.streaming_since = None
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()

    def _handle(self, event: RawEvent) -> None:
        etype = str(event.get("type") or "")
        obj = event.get("object")
        if self.metrics is not None:
            self.metrics.events.labels(self.kind.value, etype or "?").inc()
        if not isinstance(obj, Mapping):
            log.warning("%s: event %r without an object, skipped", self.name, etype)
            return
        if etype == "ERROR":
            code = int(obj.get("code") or 500)
            if code == 410:
                raise Gone(str(obj.get("message") or ""))
            raise ApiError.from_status(obj)
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if etype == "BOOKMARK":
            if rv:
                self.resource_version = str(rv)
            return
        if etype not in ("ADDED", "MODIFIED", "DELETED"):
            log.warning("%s: unknown event type %r, skipped", self.name, etype)
            return
        try:
            self._apply(etype, obj)
        except Exception:
            log.exception("%s: cannot apply %s event", self.name, etype)
        if rv:
            self.resource_version = str(rv)

    def _apply(self, etype: str, obj: Mapping[str, Any]) -> None:
        key = convert.object_key(obj)
        if etype == "DELETED":
            if self.kind is Kind.SERVICES:
                self.cache.delete_service(key)
            elif self.kind is Kind.ENDPOINTSLICES:
                self.cache.delete_slice(key)
            elif self.kind is Kind.NODES:
                self.cache.delete_node(key.name)
            else:
                self.cache.delete_pod(key)
            return
        if self.kind is Kind.SERVICES:
            svc, raw = self._convert(obj)
            self.cache.upsert_service(svc, raw)
        elif self.kind is Kind.ENDPOINTSLICES:
            self.cache.upsert_slice(convert.slice_from_api(obj))
        elif self.kind is Kind.NODES:
            self.cache.upsert_node(convert.node_from_api(obj))
        else:
            self.cache.upsert_pod(convert.pod_from_api(obj))


async def read_json_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    """Split a watch response body into JSON objects (one per line; lines may be large)."""
    buf = bytearray()
    async for chunk in chunks:
        buf.extend(chunk)
        while (i := buf.find(b"\n")) >= 0:
            line = bytes(buf[:i])
            del buf[: i + 1]
            if line.strip():
                yield json.loads(line)
    if bytes(buf).strip():
        yield json.loads(bytes(buf))
