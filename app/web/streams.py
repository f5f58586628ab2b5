"""Server-Sent Events: live fragments for the list and detail pages.

Each cache stream subscribes to the event hub with a filter, re-renders its fragment when something
relevant changed (coalesced by the hub: at most one render per ``sse_coalesce_s``), and sends it
only when the HTML differs from what the client already has. The hub closes the subscription on
shutdown, which ends the stream.

The Service page's Recent runs table has a stream of its own: the probe routes announce a new run on
the hub, and the stream follows the runs it shows until they end (progress at most once per
``sse_coalesce_s``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.sse import EventSourceResponse, ServerSentEvent

from app.catalog.detail import service_detail
from app.catalog.query import ServiceQuery, service_list
from app.domain import ObjectKey
from app.hub import Subscription
from app.kube.cache import Change, Kind
from app.probe.run import Run, RunStatus
from app.web import partials
from app.web.compare import service_runs
from app.web.deps import StateDep, TemplatesDep
from app.web.pages import list_query
from app.web.params import NamePath, NamespacePath
from app.web.render import fragment

router = APIRouter(prefix="/streams", include_in_schema=False)


def list_filter(query: ServiceQuery) -> Callable[[Any], bool]:
    """List rows show Services and endpoint counts (not pods); sync problems show on every page."""

    def wants(change: Any) -> bool:
        if not isinstance(change, Change):
            return False
        if change.key is None:  # re-list, sync state or problem
            return True
        if change.kind in (Kind.PODS, Kind.NODES):
            return False
        return query.namespace is None or change.namespace == query.namespace

    return wants


def detail_filter(namespace: str) -> Callable[[Any], bool]:
    def wants(change: Any) -> bool:
        return isinstance(change, Change) and change.namespace in ("", namespace)

    return wants


@router.get("/services", response_class=EventSourceResponse)
async def services_stream(
    state: StateDep, templates: TemplatesDep, query: Annotated[ServiceQuery, Depends(list_query)]
) -> AsyncIterator[ServerSentEvent]:
    default_size = state.settings.page_size
    with state.hub.subscribe(list_filter(query)) as sub:
        last = None
        last_namespaces: list[str] | None = None
        while True:
            listing = service_list(state.cache, query)
            html = partials.list_body(templates, listing, default_size)
            if html != last:
                last = html
                yield ServerSentEvent(raw_data=html, event="rows", id=str(state.cache.version))
            if last_namespaces is None:
                last_namespaces = listing.namespaces  # the page came with these
            elif listing.namespaces != last_namespaces:
                # The filter's dropdown follows namespaces as they appear and go (JSON, read by svcscope.js).
                last_namespaces = listing.namespaces
                yield ServerSentEvent(raw_data=json.dumps(listing.namespaces), event="namespaces")
            if not await sub.next():
                return


@router.get("/services/{namespace}/{name}", response_class=EventSourceResponse)
async def service_stream(
    namespace: NamespacePath, name: NamePath, state: StateDep, templates: TemplatesDep
) -> AsyncIterator[ServerSentEvent]:
    key = ObjectKey(namespace, name)
    domain = state.settings.cluster_domain
    with state.hub.subscribe(detail_filter(namespace)) as sub:
        last_body = last_yaml = None
        while True:
            detail = service_detail(state.cache, key, cluster_domain=domain)
            body = partials.detail_body(templates, detail, namespace, name)
            yaml_html = partials.detail_yaml(templates, detail)
            version = str(state.cache.version)
            if body != last_body:
                last_body = body
                yield ServerSentEvent(raw_data=body, event="detail", id=version)
            if yaml_html != last_yaml:
                last_yaml = yaml_html
                yield ServerSentEvent(raw_data=yaml_html, event="yaml", id=version)
            if not await sub.next():
                return


def runs_filter(namespace: str, name: str) -> Callable[[Any], bool]:
    """A run of this Service started (``app.web.probes`` publishes each new run)."""

    def wants(change: Any) -> bool:
        return isinstance(change, Run) and (change.spec.namespace, change.spec.service) == (namespace, name)

    return wants


async def next_change(sub: Subscription, running: Sequence[Run], interval: float) -> bool:
    """Wait until the hub has news or one of ``running`` progressed or ended; False once the hub closed.

    Progress is rate limited here (the hub limits its own news): at most one update per ``interval``.
    """
    if not running:
        return await sub.next()
    waits = [asyncio.ensure_future(sub.next()), *(asyncio.ensure_future(r.wait_changed()) for r in running)]
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    if sub.closed:
        return False
    if waits[0] not in done:
        await asyncio.sleep(interval)  # coalesce a run's progress: results arriving meanwhile are merged
    return not sub.closed


@router.get("/services/{namespace}/{name}/runs", response_class=EventSourceResponse)
async def runs_stream(
    namespace: NamespacePath, name: NamePath, state: StateDep, templates: TemplatesDep
) -> AsyncIterator[ServerSentEvent]:
    """The Service page's Recent runs table (event ``runs``): when a run starts, progresses or ends."""
    interval = state.settings.stream_interval_s
    with state.hub.subscribe(runs_filter(namespace, name)) as sub:
        last = None
        while True:
            runs = await service_runs(state, namespace, name)
            html = fragment(templates, "partials/_run_table.html", runs=runs)
            if html != last:
                last = html
                yield ServerSentEvent(raw_data=html, event="runs")
            runner = state.probe_runner
            running = [
                r
                for s in runs
                if s.status == RunStatus.RUNNING
                and runner is not None
                and (r := runner.get(s.id)) is not None
            ]
            if not await next_change(sub, running, interval):
                return
