"""Full HTML pages: the Services list (``/``) and a Service's detail (``/services/{ns}/{name}``).

Every URL works as a full page (reload, no JavaScript); an htmx request gets only the fragment.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse

from app.catalog.detail import service_detail
from app.catalog.query import DEFAULT_TYPES, ServiceQuery, SortField, TypeFilter, service_list
from app.domain import DNS_LABEL, LABEL_MAX, ObjectKey
from app.kube.cache import ServiceCache
from app.web import partials
from app.web.affinity import panel_context as affinity_panel
from app.web.compare import service_runs
from app.web.deps import CacheDep, SettingsDep, StateDep, TemplatesDep
from app.web.params import NamePath, NamespacePath
from app.web.probes import panel, with_warm_run_templates
from app.web.render import page, wants_fragment

router = APIRouter()


async def list_query(
    settings: SettingsDep,
    namespace: Annotated[
        str | None, Query(max_length=LABEL_MAX, pattern=r"^$|" + DNS_LABEL, description="only this namespace")
    ] = None,
    q: Annotated[str, Query(max_length=200, description="search: name, namespace, label k=v, IP")] = "",
    type: Annotated[
        list[TypeFilter] | None,
        Query(description="Service types to show (default: ClusterIP and Headless); 'all' for every type"),
    ] = None,
    types_chosen: Annotated[
        bool, Query(alias="typed", description="the type boxes were on the form: none ticked is a choice")
    ] = False,
    sort: Annotated[SortField, Query()] = SortField.NAME,
    order: Annotated[Literal["asc", "desc"], Query()] = "asc",
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    size: Annotated[int | None, Query(ge=1, le=500, description="rows per page")] = None,
) -> ServiceQuery:
    if types_chosen and not type:
        raise HTTPException(
            422,
            "No Service type is ticked, so nothing can be listed: tick at least one type, or “all types”.",
        )
    return ServiceQuery(
        namespace=namespace or None,
        search=q,
        types=_types(type),
        sort=sort,
        descending=order == "desc",
        page=page,
        page_size=size or settings.page_size,
    )


def _types(chosen: list[TypeFilter] | None) -> frozenset[TypeFilter]:
    if not chosen:
        return DEFAULT_TYPES
    if TypeFilter.ALL in chosen:
        return frozenset()
    return frozenset(chosen)


ListQuery = Annotated[ServiceQuery, Depends(list_query)]


def require_namespace(cache: ServiceCache, namespace: str | None) -> None:
    if namespace and not cache.knows_namespace(namespace):
        raise HTTPException(
            404,
            f"Namespace {namespace!r} is unknown: no Service, EndpointSlice or Pod has been seen in it "
            "(it does not exist, is empty, or is outside the namespaces svcscope watches).",
        )


def require_service(cache: ServiceCache, namespace: str, name: str) -> None:
    if cache.service(ObjectKey(namespace, name)) is None:
        where = "" if cache.knows_namespace(namespace) else " (and the namespace is unknown)"
        raise HTTPException(404, f"Service {namespace}/{name} not found{where}.")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def services_page(
    request: Request,
    cache: CacheDep,
    settings: SettingsDep,
    templates: TemplatesDep,
    query: ListQuery,
) -> HTMLResponse:
    require_namespace(cache, query.namespace)
    listing = service_list(cache, query)
    if wants_fragment(request):
        return HTMLResponse(partials.list_block(templates, listing, settings.page_size))
    return page(
        request,
        "pages/services.html",
        **partials.list_context(listing, settings.page_size),
        types=list(TypeFilter),
        sorts=list(SortField),
        sizes=sorted({20, 50, 100, 200, settings.page_size, query.page_size}),
    )


@router.get("/services/{namespace}/{name}", response_class=HTMLResponse, include_in_schema=False)
async def service_page(
    request: Request,
    namespace: NamespacePath,
    name: NamePath,
    cache: CacheDep,
    settings: SettingsDep,
    templates: TemplatesDep,
    state: StateDep,
) -> HTMLResponse:
    require_service(cache, namespace, name)
    detail = service_detail(cache, ObjectKey(namespace, name), cluster_domain=settings.cluster_domain)
    if wants_fragment(request):
        return HTMLResponse(partials.detail_body(templates, detail, namespace, name))
    response = page(
        request,
        "pages/service.html",
        d=detail,
        namespace=namespace,
        name=name,
        runs=await service_runs(state, namespace, name),
        **affinity_panel(state, namespace, name),
        probe=panel(state, ObjectKey(namespace, name)),
    )
    return with_warm_run_templates(response, templates)
