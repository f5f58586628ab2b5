"""The one place that builds a Kubernetes API client, and the real :class:`EventSource`.

In a pod (``KUBERNETES_SERVICE_HOST`` set and no kubeconfig configured) the ServiceAccount token is
used; otherwise the kubeconfig from ``SVCSCOPE_KUBECONFIG`` or the default location. Lists and
watches skip the client's model deserialisation: the JSON goes straight to ``app.kube.convert``,
which is several times faster for large lists.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from app.kube.cache import ALL_NAMESPACES, Kind
from app.kube.watch import ApiError, ListResult, RawEvent, read_json_lines

log = logging.getLogger(__name__)

LIST_PAGE_SIZE = 500
REQUEST_TIMEOUT = (10.0, 60.0)  # (connect, read) seconds for list requests


async def create_api_client(*, kubeconfig: str | None, in_cluster: bool) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    if kubeconfig is None and in_cluster:
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        log.info("using the in-cluster ServiceAccount")
    else:
        await k8s_config.load_kube_config(
            config_file=kubeconfig, client_configuration=configuration, persist_config=False
        )
        log.info("using kubeconfig %s", kubeconfig or "(default)")
    return k8s.ApiClient(configuration=configuration)


async def _api_error(resp: Any) -> ApiError:
    body = await resp.read()
    try:
        status = json.loads(body)
    except ValueError:
        status = {}
    if not isinstance(status, dict):
        status = {}
    return ApiError(
        int(resp.status),
        str(status.get("reason") or resp.reason or ""),
        str(status.get("message") or body[:300]),
    )


class ApiSource:
    """:class:`~app.kube.watch.EventSource` over a kubernetes_asyncio ``ApiClient``."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.core = k8s.CoreV1Api(api)
        self.discovery = k8s.DiscoveryV1Api(api)

    def _method(self, kind: Kind, namespace: str) -> Callable[..., Any]:
        if namespace == ALL_NAMESPACES:
            cluster_wide: dict[Kind, Callable[..., Any]] = {
                Kind.SERVICES: self.core.list_service_for_all_namespaces,
                Kind.PODS: self.core.list_pod_for_all_namespaces,
                Kind.ENDPOINTSLICES: self.discovery.list_endpoint_slice_for_all_namespaces,
            }
            return cluster_wide[kind]
        namespaced: dict[Kind, Callable[..., Any]] = {
            Kind.SERVICES: self.core.list_namespaced_service,
            Kind.PODS: self.core.list_namespaced_pod,
            Kind.ENDPOINTSLICES: self.discovery.list_namespaced_endpoint_slice,
        }
        return functools.partial(namespaced[kind], namespace)

    async def list(self, kind: Kind, namespace: str) -> ListResult:
        method = self._method(kind, namespace)
        items: list[Any] = []
        token: str | None = None
        resource_version = ""
        for _ in range(100_000):  # bounded: 50 M objects
            kwargs: dict[str, Any] = {"limit": LIST_PAGE_SIZE, "_preload_content": False}
            if token:
                kwargs["_continue"] = token
            resp = await method(_request_timeout=REQUEST_TIMEOUT, **kwargs)
            try:
                if resp.status != 200:
                    raise await _api_error(resp)
                data = json.loads(await resp.read())
            finally:
                resp.release()
            items.extend(data.get("items") or [])
            meta = data.get("metadata") or {}
            resource_version = str(meta.get("resourceVersion") or "")
            token = meta.get("continue")
            if not token:
                break
        return ListResult(items=items, resource_version=resource_version)

    async def watch(
        self, kind: Kind, namespace: str, resource_version: str, timeout_s: int
    ) -> AsyncIterator[RawEvent]:
        method = self._method(kind, namespace)
        resp = await method(
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=resource_version,
            timeout_seconds=timeout_s,
            _preload_content=False,
            _request_timeout=(10.0, None),
        )
        try:
            if resp.status != 200:
                raise await _api_error(resp)
            async for event in read_json_lines(resp.content.iter_any()):
                yield event
        finally:
            resp.close()
