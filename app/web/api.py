"""JSON API under ``/api/v1``: the same view models as the HTML pages, as pydantic responses."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from app.catalog.detail import EndpointView, PodView, PortView, ServiceDetail, service_detail
from app.catalog.query import ServiceQuery, ServiceRow, service_list
from app.domain import ObjectKey, Service, ServicePort
from app.kube.cache import Problem
from app.web.deps import CacheDep, SettingsDep
from app.web.pages import list_query, require_namespace, require_service
from app.web.params import NamePath, NamespacePath

router = APIRouter(prefix="/api/v1", tags=["services"])


class ErrorOut(BaseModel):
    detail: str = Field(description="What went wrong, in plain words")


class PortOut(BaseModel):
    name: str | None
    port: int
    target_port: int | str = Field(description="a number, or the name of a container port each pod resolves")
    protocol: str
    app_protocol: str | None = None
    node_port: int | None = None
    label: str = Field(description="name:port→targetPort/proto")

    @classmethod
    def of(cls, p: ServicePort) -> PortOut:
        return cls(
            name=p.name,
            port=p.port,
            target_port=p.target_port,
            protocol=p.protocol.value,
            app_protocol=p.app_protocol,
            node_port=p.node_port,
            label=p.label,
        )


class ProblemOut(BaseModel):
    resource: str
    scope: str = Field(description="a namespace, or * for all namespaces")
    message: str

    @classmethod
    def of(cls, p: Problem) -> ProblemOut:
        return cls(resource=p.kind.value, scope=p.scope or "*", message=p.message)


class ServiceSummaryOut(BaseModel):
    namespace: str
    name: str
    type: str
    headless: bool
    cluster_ip: str | None
    cluster_ips: list[str]
    external_name: str | None
    ports: list[PortOut]
    selector: dict[str, str] | None = Field(description="null: no selector (endpoints managed by hand)")
    session_affinity: str
    affinity_timeout_s: int | None
    endpoints_ready: int
    endpoints_total: int
    created: datetime | None
    labels: dict[str, str]
    url: str

    @classmethod
    def of(cls, row: ServiceRow) -> ServiceSummaryOut:
        s: Service = row.service
        return cls(
            namespace=s.key.namespace,
            name=s.key.name,
            type=s.type.value,
            headless=s.headless,
            cluster_ip=s.cluster_ip,
            cluster_ips=list(s.cluster_ips),
            external_name=s.external_name,
            ports=[PortOut.of(p) for p in s.ports],
            selector=dict(s.selector) if s.selector is not None else None,
            session_affinity=s.session_affinity,
            affinity_timeout_s=s.affinity_timeout_s,
            endpoints_ready=row.endpoints.ready,
            endpoints_total=row.endpoints.total,
            created=s.created,
            labels=dict(s.labels),
            url=f"/api/v1/services/{s.key.namespace}/{s.key.name}",
        )


class ServiceListOut(BaseModel):
    items: list[ServiceSummaryOut]
    total: int = Field(description="Services matching the filters (all pages)")
    page: int
    pages: int
    page_size: int
    synced: bool = Field(description="false until the first lists of every watched resource arrived")
    problems: list[ProblemOut]


class ConditionsOut(BaseModel):
    ready: bool | None = Field(description="as sent by the API; null = absent")
    serving: bool | None
    terminating: bool | None
    effective_ready: bool = Field(description="absent ready is read as true (EndpointConditions docs)")
    effective_serving: bool = Field(description="absent serving is read as true")
    effective_terminating: bool = Field(description="absent terminating is read as false")


class EndpointOut(BaseModel):
    slice: str
    address_type: str
    addresses: list[str]
    conditions: ConditionsOut
    hostname: str | None
    node_name: str | None
    zone: str | None
    target_ref: str | None = Field(description="Kind/namespace/name")
    pod: str | None = Field(description="the cached pod behind it, if any")
    ports: str

    @classmethod
    def of(cls, e: EndpointView) -> EndpointOut:
        ep, c = e.endpoint, e.endpoint.conditions
        ref = ep.target_ref
        return cls(
            slice=e.slice_name,
            address_type=e.address_type,
            addresses=list(ep.addresses),
            conditions=ConditionsOut(
                ready=c.ready,
                serving=c.serving,
                terminating=c.terminating,
                effective_ready=c.effective_ready,
                effective_serving=c.effective_serving,
                effective_terminating=c.effective_terminating,
            ),
            hostname=ep.hostname,
            node_name=ep.node_name,
            zone=ep.zone,
            target_ref=f"{ref.kind}/{ref.namespace or ''}/{ref.name}" if ref else None,
            pod=e.pod.key.name if e.pod else None,
            ports=e.ports,
        )


class PodOut(BaseModel):
    name: str
    phase: str
    ready: bool
    ip: str | None
    node: str | None
    restarts: int
    created: datetime | None
    deleting: bool
    via: str = Field(description="endpoints (slice targetRef), selector, or both")

    @classmethod
    def of(cls, v: PodView) -> PodOut:
        p = v.pod
        return cls(
            name=p.key.name,
            phase=p.phase,
            ready=p.ready,
            ip=p.pod_ip,
            node=p.node_name,
            restarts=p.restarts,
            created=p.created,
            deleting=p.deleting,
            via=v.via,
        )


class PortResolutionOut(BaseModel):
    port: PortOut
    per_pod: dict[str, int | None] = Field(
        description="container port each pod maps targetPort to; null: missing"
    )
    missing: list[str]
    ready_endpoints: int

    @classmethod
    def of(cls, v: PortView) -> PortResolutionOut:
        return cls(
            port=PortOut.of(v.port),
            per_pod={p.pod: p.port for p in v.per_pod},
            missing=v.missing,
            ready_endpoints=v.ready_endpoints,
        )


class DiagnosticOut(BaseModel):
    level: str = Field(description="ok, info, warning or error")
    text: str


class ReachOut(BaseModel):
    dns_names: list[str]
    commands: list[str]
    ping_note: str


class ServiceDetailOut(BaseModel):
    service: ServiceSummaryOut
    ip_families: list[str]
    ip_family_policy: str | None
    internal_traffic_policy: str | None
    external_traffic_policy: str | None
    traffic_distribution: str | None
    annotations: dict[str, str]
    ports: list[PortResolutionOut]
    endpoints: list[EndpointOut]
    pods: list[PodOut]
    diagnostics: list[DiagnosticOut]
    reach: ReachOut
    yaml: str
    problems: list[ProblemOut]

    @classmethod
    def of(cls, d: ServiceDetail) -> ServiceDetailOut:
        s = d.service
        return cls(
            service=ServiceSummaryOut.of(d.row),
            ip_families=list(s.ip_families),
            ip_family_policy=s.ip_family_policy,
            internal_traffic_policy=s.internal_traffic_policy,
            external_traffic_policy=s.external_traffic_policy,
            traffic_distribution=s.traffic_distribution,
            annotations=dict(s.annotations),
            ports=[PortResolutionOut.of(p) for p in d.ports],
            endpoints=[EndpointOut.of(e) for e in d.endpoints],
            pods=[PodOut.of(p) for p in d.pods],
            diagnostics=[DiagnosticOut(level=x.level.value, text=x.text) for x in d.diagnostics],
            reach=ReachOut(
                dns_names=d.reach.dns_names, commands=d.reach.commands, ping_note=d.reach.ping_note
            ),
            yaml=d.yaml,
            problems=[ProblemOut.of(p) for p in d.problems],
        )


ERRORS: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorOut, "description": "Unknown namespace or Service"},
    422: {"model": ErrorOut, "description": "Invalid parameters"},
}


@router.get(
    "/services", response_model=ServiceListOut, responses=ERRORS, summary="List Services (from the cache)"
)
async def list_services(
    cache: CacheDep, query: Annotated[ServiceQuery, Depends(list_query)]
) -> ServiceListOut:
    require_namespace(cache, query.namespace)
    listing = service_list(cache, query)
    return ServiceListOut(
        items=[ServiceSummaryOut.of(r) for r in listing.rows],
        total=listing.total,
        page=listing.page,
        pages=listing.pages,
        page_size=query.page_size,
        synced=listing.synced,
        problems=[ProblemOut.of(p) for p in listing.problems],
    )


@router.get(
    "/services/{namespace}/{name}",
    response_model=ServiceDetailOut,
    responses=ERRORS,
    summary="One Service: ports resolved per pod, endpoints, pods, diagnostics",
)
async def get_service(
    namespace: NamespacePath, name: NamePath, cache: CacheDep, settings: SettingsDep
) -> ServiceDetailOut:
    require_service(cache, namespace, name)
    detail = service_detail(cache, ObjectKey(namespace, name), cluster_domain=settings.cluster_domain)
    assert detail is not None  # checked by require_service
    return ServiceDetailOut.of(detail)
