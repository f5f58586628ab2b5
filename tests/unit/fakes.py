"""The unit tests' shared fakes: a ClusterView made of plain dicts (with builders for Services, slices
and pods), a loopback L4 balancer standing in for kube-proxy, and a "cluster" of echo servers behind
it that the probe runner reaches through its ``dial`` seam."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from app.config import Settings
from app.domain import (
    ContainerPort,
    Endpoint,
    EndpointConditions,
    EndpointPort,
    EndpointSlice,
    ObjectKey,
    Pod,
    Protocol,
    Service,
    ServiceKey,
    ServicePort,
    ServiceType,
    TargetRef,
)
from app.echo import EchoServer, Identity, Mode, ServeConfig
from app.kube.actions import ActionError
from app.lifespan import limits_from
from app.probe.runner import ProbeRunner
from app.probe.spec import Limits
from app.probe.toolclient import DETECT_TAG, detect_argv
from app.probe.watchrun import WatchBounds
from app.writepolicy import Write

NS = "demo"


def limits(**overrides: object) -> Limits:
    """The runner's bounds as the default Settings give them, with some replaced."""
    return dataclasses.replace(limits_from(Settings()), **overrides)  # type: ignore[arg-type]


def watch_bounds(**overrides: object) -> WatchBounds:
    """Small bounds for watch tests (the real ones come from Settings)."""
    bounds = WatchBounds(
        min_rate=1,
        max_rate=200,
        max_duration_s=60,
        max_timeout_s=5,
        max_active=2,
        kept=5,
        ring_s=600,
        max_window_s=60,
    )
    return dataclasses.replace(bounds, **overrides)  # type: ignore[arg-type]


@dataclass
class FakeView:
    services: dict[ObjectKey, Service] = field(default_factory=dict)
    slices: dict[ObjectKey, list[EndpointSlice]] = field(default_factory=dict)
    pods: dict[ObjectKey, Pod] = field(default_factory=dict)
    hosts: set[str] = field(default_factory=set)  # node addresses (the pods' hostIPs)
    gateways: set[str] = field(default_factory=set)

    def service(self, key: ServiceKey) -> Service | None:
        return self.services.get(key)

    def slices_for(self, key: ServiceKey) -> Sequence[EndpointSlice]:
        return self.slices.get(key, [])

    def pod(self, key: ObjectKey) -> Pod | None:
        return self.pods.get(key)

    def host_addresses(self) -> frozenset[str]:
        return frozenset(self.hosts)

    def gateway_addresses(self) -> frozenset[str]:
        return frozenset(self.gateways)

    def add_service(self, svc: Service) -> None:
        self.services[svc.key] = svc

    def set_endpoints(
        self,
        key: ObjectKey,
        pods: Sequence[tuple[str, str]],
        ports: Sequence[EndpointPort],
        *,
        watched: bool = True,
        ready: bool = True,
    ) -> None:
        eps = []
        for name, ip in pods:
            eps.append(
                Endpoint(
                    addresses=(ip,),
                    conditions=EndpointConditions(ready, None, None),
                    node_name="node-1",
                    target_ref=TargetRef("Pod", key.namespace, name),
                )
            )
            if watched:
                self.pods[ObjectKey(key.namespace, name)] = make_pod(name, ip, key.namespace)
        self.slices[key] = [
            EndpointSlice(
                key=ObjectKey(key.namespace, f"{key.name}-abc"),
                service_name=key.name,
                address_type="IPv4",
                endpoints=tuple(eps),
                ports=tuple(ports),
            )
        ]


def make_pod(name: str, ip: str, namespace: str = NS) -> Pod:
    return Pod(
        key=ObjectKey(namespace, name),
        uid=f"uid-{name}",
        labels={"app": "web"},
        phase="Running",
        ready=True,
        pod_ip=ip,
        pod_ips=(ip,),
        node_name="node-1",
        restarts=0,
        created=None,
        deleting=False,
        container_ports=(ContainerPort("echo", "http", 8080),),
    )


def make_service(
    name: str = "web",
    *,
    cluster_ip: str = "198.19.0.50",
    ports: Sequence[ServicePort] = (ServicePort("http", 80, "http"),),
    namespace: str = NS,
    type: ServiceType = ServiceType.CLUSTER_IP,
    affinity: str = "None",
    affinity_timeout_s: int | None = None,
    annotations: dict[str, str] | None = None,
    external_name: str | None = None,
) -> Service:
    return Service(
        key=ObjectKey(namespace, name),
        uid=f"uid-{name}",
        type=type,
        cluster_ip=cluster_ip,
        cluster_ips=(cluster_ip,) if cluster_ip else (),
        ip_families=("IPv4",),
        ip_family_policy="SingleStack",
        ports=tuple(ports),
        selector={"app": name},
        session_affinity=affinity,
        affinity_timeout_s=affinity_timeout_s,
        internal_traffic_policy="Cluster",
        external_traffic_policy=None,
        traffic_distribution=None,
        external_name=external_name,
        labels={},
        annotations=annotations or {},
        created=None,
        resource_version="1",
    )


HTTP_PORT = EndpointPort("http", 8080, Protocol.TCP)


def web_view(n: int = 3, **service_kw: object) -> FakeView:
    """Service demo/web (198.19.0.50:80 -> http) with pods web-0..n-1 at 198.18.0.10+i, plus the apiserver."""
    view = FakeView()
    view.add_service(
        make_service(
            "kubernetes",
            namespace="default",
            cluster_ip="198.19.0.1",
            ports=(ServicePort("https", 443, 6443),),
        )
    )
    view.set_endpoints(ObjectKey("default", "kubernetes"), [], [EndpointPort("https", 6443)], watched=False)
    view.slices[ObjectKey("default", "kubernetes")] = [
        EndpointSlice(
            key=ObjectKey("default", "kubernetes"),
            service_name="kubernetes",
            address_type="IPv4",
            endpoints=(Endpoint(("198.18.255.1",), EndpointConditions(True, True, False)),),
            ports=(EndpointPort("https", 6443),),
        )
    ]
    view.add_service(make_service(**service_kw))  # type: ignore[arg-type]
    view.set_endpoints(
        ObjectKey(NS, "web"), [(f"web-{i}", f"198.18.0.{10 + i}") for i in range(n)], [HTTP_PORT]
    )
    return view


class L4Balancer:
    """A tiny stand-in for kube-proxy on loopback: each new connection goes to the next backend."""

    def __init__(self, backends: Sequence[int]) -> None:
        self.backends = list(backends)
        self._next = itertools.cycle(range(len(self.backends)))
        self.server: asyncio.Server | None = None
        self.port = 0
        self.connections = 0
        self.open = 0  # connections open now, and the most at once
        self.peak = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> L4Balancer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=512)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        self.open += 1
        self.peak = max(self.peak, self.open)
        port = self.backends[next(self._next)]
        up_w: asyncio.StreamWriter | None = None

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.close()

        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        except OSError:
            pass
        finally:
            self.open -= 1
            self._tasks.discard(task)
            for w in (writer, up_w):
                if w is not None:
                    w.close()


# -- a loopback cluster: echo servers as pods, L4Balancers as the ClusterIP ports

WEB = ObjectKey(NS, "web")
PORTS = (
    ServicePort("http", 80, "http"),
    ServicePort("tcp", 9000, 9000),
    ServicePort("udp", 9001, 9001, Protocol.UDP),
)
SLICE_PORTS = [EndpointPort("http", 8080), EndpointPort("tcp", 9000), EndpointPort("udp", 9001, Protocol.UDP)]


@dataclass
class Cluster:
    view: FakeView
    echoes: list[EchoServer]
    http_lb: L4Balancer
    tcp_lb: L4Balancer
    routes: dict[tuple[str, int], tuple[str, int]]

    def dial(self, host: str, port: int) -> tuple[str, int]:
        return self.routes.get((host, port), ("127.0.0.1", 1))  # unknown: a closed port

    def runner(self, clock: Callable[[], float] | None = None, **bounds: object) -> ProbeRunner:
        if clock is not None:
            return ProbeRunner(self.view, limits(**bounds), dial=self.dial, clock=clock)
        return ProbeRunner(self.view, limits(**bounds), dial=self.dial)


async def make_cluster(n: int, mode: Mode = "normal", **service_kw: object) -> AsyncIterator[Cluster]:
    async with AsyncExitStack() as stack:
        view = web_view(n, ports=PORTS, **service_kw)
        view.set_endpoints(WEB, [(f"web-{i}", f"198.18.0.{10 + i}") for i in range(n)], SLICE_PORTS)
        echoes = []
        for i in range(n):
            echo = EchoServer(
                ServeConfig(
                    Identity(f"web-{i}", f"198.18.0.{10 + i}", "node-1", mode),
                    host="127.0.0.1",
                    http_port=0,
                    tcp_port=0,
                    udp_port=0,
                    grace=0.1,
                )
            )
            await echo.start()
            stack.push_async_callback(echo.stop)
            echoes.append(echo)
        http_lb = await stack.enter_async_context(L4Balancer([e.http_port for e in echoes]))
        tcp_lb = await stack.enter_async_context(L4Balancer([e.tcp_port for e in echoes]))
        routes = {
            ("198.19.0.50", 80): ("127.0.0.1", http_lb.port),
            ("198.19.0.50", 9000): ("127.0.0.1", tcp_lb.port),
        }
        if echoes:
            routes[("198.19.0.50", 9001)] = ("127.0.0.1", echoes[0].udp_port)
        for i, e in enumerate(echoes):
            ip = f"198.18.0.{10 + i}"
            routes[(ip, 8080)] = ("127.0.0.1", e.http_port)
            routes[(ip, 9000)] = ("127.0.0.1", e.tcp_port)
            routes[(ip, 9001)] = ("127.0.0.1", e.udp_port)
        yield Cluster(view, echoes, http_lb, tcp_lb, routes)


def record_line(seq: int, identity: str | None = None, error: str | None = None, **fields: object) -> str:
    """One ``--format json`` output line of the echo client (``app.echo.record``)."""
    from app.echo.record import Record

    values: dict[str, Any] = {"latency_ms": 1.5, "conn": seq, **fields}
    return Record(seq, "http", identity=identity, error=error, **values).json_line()


class FakeRemote:
    """The echo client in a pod: yields ``lines`` (after ``gate`` is set, if given), records its calls."""

    def __init__(
        self,
        lines: Sequence[str],
        *,
        gate: asyncio.Event | None = None,
        tools: str | None = "python3 svcscope head od tr sleep date date-ns",
    ) -> None:
        self.lines = list(lines)
        self.gate = gate
        self.calls: list[tuple[str | None, str | None, list[str]]] = []
        self.names: list[str | None] = []
        self.refused: dict[tuple[Write, str], str] = {}  # (write, namespace) -> reason
        self.closed = 0  # streams closed (cleanly or early): the pod deleted / the exec closed
        self.nodes: list[str | None] = []
        self.host_network: list[bool] = []  # per probe pod: on the node's network (origin node)
        self.started_ip: str | None = "198.18.0.99"  # what a started probe pod reports as its IP
        # What an exec's look for tools finds (None: the container has no shell); svcscope's image by default.
        self.tools: str | None = tools
        self.detections: list[tuple[str, str, str | None]] = []

    def refusal(self, write: Write, namespace: str, name: str) -> str | None:
        return self.refused.get((write, namespace))

    async def _lines(self) -> AsyncGenerator[str, None]:
        try:
            if self.gate is not None:
                await self.gate.wait()
            for line in self.lines:
                yield line
        finally:
            self.closed += 1

    def probe_pod(
        self,
        argv: Sequence[str],
        budget_s: float,
        *,
        name: str | None = None,
        node: str | None = None,
        host_network: bool = False,
        started: Callable[[str | None, str | None], None] | None = None,
    ) -> AsyncGenerator[str, None]:
        if started is not None:  # as the real one does once the pod runs: its address and node
            started(self.started_ip, node or "node-1")
        self.host_network.append(host_network)
        self.names.append(name)
        self.nodes.append(node)
        self.calls.append((None, None, list(argv)))
        return self._lines()

    def exec_in_pod(
        self,
        namespace: str,
        pod: str,
        argv: Sequence[str],
        budget_s: float,
        *,
        container: str | None = None,
    ) -> AsyncGenerator[str, None]:
        if list(argv) == detect_argv():  # the look for a client tool: answered by ``tools``
            self.detections.append((namespace, pod, container))
            return self._detected()
        self.calls.append((namespace, pod, list(argv)))
        return self._lines()

    async def _detected(self) -> AsyncGenerator[str, None]:
        if self.tools is None:
            raise self.no_command()
        yield f"{DETECT_TAG} {self.tools}"

    @staticmethod
    def no_command() -> Exception:
        error = ActionError("exec into pod: the container has no 'sh' command")
        error.command_not_found = True
        return error
