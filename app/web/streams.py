"""Server-Sent Events: live fragments for the list and detail pages.

Each stream subscribes to the event hub with a filter, re-renders its fragment when something
relevant changed (coalesced by the hub: at most one render per ``sse_coalesce_s``), and sends it
only when the HTML differs from what the client already has. The hub closes the subscription on
shutdown, which ends the stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.sse import EventSourceResponse, ServerSentEvent

from app.domain import ObjectKey
from app.kube.cache import Change, Kind, ServiceQuery
from app.kube.views import service_detail, service_list
from app.web import partials
from app.web.deps import StateDep, TemplatesDep
from app.web.pages import NamePath, NamespacePath, list_query

router = APIRouter(prefix="/streams", include_in_schema=False)


def list_filter(query: ServiceQuery) -> Callable[[Any], bool]:
    """List rows show Services and endpoint counts (not pods); sync problems show on every page."""

    def wants(change: Any) -> bool:
        if not isinstance(change, Change):
            return False
        if change.key is None:  # re-list, sync state or problem
            return True
        if change.kind is Kind.PODS:
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
        while True:
            html = partials.list_body(templates, service_list(state.cache, query), default_size)
            if html != last:
                last = html
                yield ServerSentEvent(raw_data=html, event="rows", id=str(state.cache.version))
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
            yaml_html = partials.detail_yaml(detail)
            version = str(state.cache.version)
            if body != last_body:
                last_body = body
                yield ServerSentEvent(raw_data=body, event="detail", id=version)
            if yaml_html != last_yaml:
                last_yaml = yaml_html
                yield ServerSentEvent(raw_data=yaml_html, event="yaml", id=version)
            if not await sub.next():
                return
