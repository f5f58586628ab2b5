"""The one place that builds a Kubernetes API client, and the real :class:`EventSource`.

In a pod (``KUBERNETES_SERVICE_HOST`` set and no kubeconfig configured) the ServiceAccount token is
used; otherwise the kubeconfig from ``SVCSCOPE_KUBECONFIG`` or the default location. Lists and
watches skip the client's model deserialisation: the JSON goes straight to ``app.kube.convert``,
which is several times faster for large lists.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import socket
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from app.kube.cache import ALL_NAMESPACES, Kind
from app.kube.waiting import report_waiting
from app.kube.watch import ApiError, ListResult, RawEvent, read_json_lines

log = logging.getLogger(__name__)

T = TypeVar("T")

LIST_PAGE_SIZE = 500
REQUEST_TIMEOUT = (10.0, 60.0)  # (connect, read) seconds for list requests
PING_TIMEOUT = (3.0, 3.0)
CALL_TIMEOUT_S = 10.0  # one API call of an action (create, read, delete ...)
SLOW_CALL_S = 2.0  # after this long without an answer, a run says it is waiting for the apiserver
# A watch connection is idle for long stretches; without keepalive a dead peer (a partition, a node
# that vanished) goes unnoticed until the inactivity timeout. These find it in about 25 s.
KEEPALIVE_IDLE_S = 10
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_COUNT = 3
USER_TIMEOUT_MS = 20_000  # unacknowledged data for this long also ends the connection


class ApiTimeout(TimeoutError):
    """An API call of an action got no answer in time (the message says which call)."""


async def bounded(call: Awaitable[T], what: str, *, timeout_s: float = CALL_TIMEOUT_S) -> T:
    """Await one Kubernetes API call with a deadline.

    ``what`` names the call for people ("creating probe pod ns/name"). While it is slow, whoever set
    :func:`app.kube.waiting.reporting_to` (a probe run) is told "waiting for the apiserver (...)", and
    told again (``None``) once it answers. Raises :class:`ApiTimeout` after ``timeout_s``.
    """
    loop = asyncio.get_running_loop()
    slow = loop.call_later(SLOW_CALL_S, report_waiting, f"waiting for the apiserver ({what})")
    try:
        async with asyncio.timeout(timeout_s):
            result = await call
    except TimeoutError as exc:
        report_waiting(f"waiting for the apiserver: no answer to {what} within {timeout_s:g} s")
        raise ApiTimeout(f"the apiserver did not answer {what} within {timeout_s:g} s") from exc
    finally:
        slow.cancel()
    report_waiting(None)
    return result


def keep_alive(resp: Any) -> None:
    """Turn on TCP keepalive (and a user timeout) on the connection of a streaming response."""
    connection = getattr(resp, "connection", None)
    transport = getattr(connection, "transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
        ("TCP_USER_TIMEOUT", USER_TIMEOUT_MS),
    ):
        if hasattr(socket, name):  # Linux names; other systems keep their defaults
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    for level, option, value in options:
        try:
            sock.setsockopt(level, option, value)
        except OSError as exc:  # not a TCP socket (a test double, a Unix socket): nothing to tune
            log.debug("setsockopt(%s) failed: %s", option, exc)
            return


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


def drop(resp: Any) -> None:
    """Close a streaming response's connection at once.

    A graceful TLS close sends close_notify and waits on the event loop for the peer's answer. A watch we
    stop reading (cancelled on shutdown, restarted after a timeout) needs no such goodbye, and one still
    waiting when the loop closes leaks its socket: under uvloop, closing the loop then fails with EBUSY.
    """
    connection = getattr(resp, "connection", None)
    transport = getattr(connection, "transport", None)
    resp.close()
    if transport is not None:
        transport.abort()


class ApiSource:
    """:class:`~app.kube.watch.EventSource` over a kubernetes_asyncio ``ApiClient``."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.core = k8s.CoreV1Api(api)
        self.discovery = k8s.DiscoveryV1Api(api)

    def _method(self, kind: Kind, namespace: str) -> Callable[..., Any]:
        if kind is Kind.NODES:  # cluster-scoped: there is no namespaced list
            return self.core.list_node
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

    async def ping(self, namespace: str = ALL_NAMESPACES) -> None:
        """A consistent read of at most one Service: answered from etcd, so it fails (or hangs until
        the caller's deadline) when the apiserver or etcd is down, and needs only the list permission
        the watches already have."""
        method = self._method(Kind.SERVICES, namespace)
        resp = await method(limit=1, _preload_content=False, _request_timeout=PING_TIMEOUT)
        try:
            if resp.status != 200:
                raise await _api_error(resp)
            await resp.read()
        finally:
            resp.release()

    async def watch(
        self, kind: Kind, namespace: str, resource_version: str, timeout_s: int
    ) -> AsyncGenerator[RawEvent, None]:
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
            keep_alive(resp)
            async for event in read_json_lines(resp.content.iter_any()):
                yield event
        finally:
            drop(resp)
