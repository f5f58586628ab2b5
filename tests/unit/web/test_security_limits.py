"""Request bounds before parsing (413 / 414 / 431), the live-stream caps and what /metrics counts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Message

from app.config import Settings
from app.kube.cache import ServiceCache
from app.main import create_app
from app.web.limits import LimitsMiddleware, RequestLimits, StreamSlots, is_stream_path
from app.web.probes import csv_cell
from tests.unit.web.sse import call, events

LIMITS = RequestLimits(max_body_bytes=1000, max_url_bytes=200, max_header_bytes=2000)


async def read_all(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"size": len(body)})


async def parse_json(request: Request) -> JSONResponse:
    try:
        await request.json()
    except Exception:  # what frameworks do with a body they could not read: a 400
        return JSONResponse({"detail": "broken body"}, status_code=400)
    return JSONResponse({"ok": True})


def bare_client() -> TestClient:
    app = Starlette(
        routes=[Route("/read", read_all, methods=["POST"]), Route("/json", parse_json, methods=["POST"])]
    )
    app.add_middleware(LimitsMiddleware, limits=LIMITS)
    return TestClient(app)


def chunks(*sizes: int) -> Iterator[bytes]:
    for size in sizes:
        yield b"x" * size


@pytest.mark.parametrize(
    ("kwargs", "status", "detail"),
    [
        ({"content": b"x" * 1000}, 200, None),
        ({"content": b"x" * 1001}, 413, "Content-Length 1001"),
        ({"chunks": (400, 400)}, 200, None),  # chunked, under the cap
        ({"chunks": (400, 400, 400)}, 413, "at most 1000 bytes"),  # chunked, counted as it comes
        ({"chunks": (5000,)}, 413, "at most 1000 bytes"),
    ],
)
@pytest.mark.parametrize("path", ["/read", "/json"])
def test_body_cap(path: str, kwargs: dict[str, Any], status: int, detail: str | None) -> None:
    if "chunks" in kwargs:  # a generator: sent with Transfer-Encoding: chunked, no Content-Length
        kwargs = {"content": chunks(*kwargs["chunks"])}
    r = bare_client().post(path, **kwargs)
    if path == "/json" and status == 200:
        assert r.status_code == 400  # not JSON, but read whole: the cap did not interfere
        return
    assert r.status_code == status
    if detail:
        assert r.json()["detail"].startswith("request body too large") and detail in r.json()["detail"]


async def test_declared_length_refused_before_a_byte_is_read() -> None:
    """A 100 MB Content-Length: answered at once, without reading (or buffering) the body."""
    reads = 0

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never reached
        raise AssertionError("the app must not run")

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/v1/probes",
        "raw_path": b"/api/v1/probes",
        "query_string": b"",
        "headers": [(b"content-length", b"100000000"), (b"content-type", b"application/json")],
    }
    await LimitsMiddleware(app, limits=RequestLimits())(scope, receive, send)
    assert reads == 0 and sent[0]["status"] == 413
    assert "Content-Length 100000000" in json.loads(sent[1]["body"])["detail"]


@pytest.mark.parametrize(
    ("url", "headers", "status"),
    [
        ("/read?q=" + "a" * 150, {}, 200),
        ("/read?q=" + "a" * 300, {}, 414),
        ("/" + "a" * 300, {}, 414),
        ("/read", {"x-big": "a" * 1500}, 200),
        ("/read", {"x-big": "a" * 2500}, 431),
        ("/read", {f"x-{i}": "a" * 100 for i in range(30)}, 431),
    ],
)
def test_url_and_header_caps(url: str, headers: dict[str, str], status: int) -> None:
    r = bare_client().post(url, headers=headers, content=b"")
    assert r.status_code == status
    if status != 200:
        assert ("URL too long" if status == 414 else "request headers too large") in r.json()["detail"]


@pytest.mark.parametrize(
    ("path", "stream"),
    [
        ("/streams/services", True),
        ("/streams/services/demo/web", True),
        ("/streams/services/demo/web/runs", True),
        ("/runs/abc123/stream", True),
        ("/runs/abc123", False),
        ("/api/v1/probes", False),
        ("/services/demo/web", False),
    ],
)
def test_stream_paths(path: str, stream: bool) -> None:
    assert is_stream_path(path) is stream


def test_stream_slots_rules() -> None:
    slots = StreamSlots(max_total=3, max_per_client=2)
    assert slots.refusal("a") is None
    slots.acquire("a")
    slots.acquire("a")
    status, detail = slots.refusal("a") or (0, "")
    assert status == 429 and "SVCSCOPE_SSE_MAX_STREAMS_PER_CLIENT" in detail
    assert slots.refusal("b") is None
    slots.acquire("b")
    status, detail = slots.refusal("c") or (0, "")
    assert status == 503 and "at most 3" in detail
    slots.release("a")
    assert slots.refusal("c") is None and slots.open == 2 and dict(slots.per_client) == {"a": 1, "b": 1}


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("\uff1d1+1", "'\uff1d1+1"),
        ("web-0", "web-0"),
        ("", ""),
        (12, "12"),
        ("a=b", "a=b"),
    ],
)
def test_csv_cells_cannot_be_formulas(value: object, cell: str) -> None:
    assert csv_cell(value) == cell


# -- through the whole app ---------------------------------------------------------------------------


@pytest.fixture
async def app_client() -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    settings = Settings(csrf_secret="t", sse_max_streams=3, sse_max_streams_per_client=2, sse_coalesce_s=0.05)
    app = create_app(settings, cache=ServiceCache(), start_watchers=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            yield app, c


async def test_app_refuses_a_large_json_body_with_a_message(
    app_client: tuple[Any, httpx.AsyncClient],
) -> None:
    _, c = app_client
    r = await c.post(
        "/api/v1/probes", content=b"[" + b"1," * 100_000 + b"1]", headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and "request body too large" in r.json()["detail"]
    assert r.headers["x-frame-options"] == "DENY"  # the hardening headers on refusals too
    r = await c.post("/probes", data={"namespace": "x" * 70_000})
    assert r.status_code == 413


def sse_gauge(metrics: str) -> float:
    return float(
        next(line.split()[1] for line in metrics.splitlines() if line.startswith("svcscope_sse_clients "))
    )


def test_stream_caps_and_the_gauge_count_every_kind() -> None:
    settings = Settings(csrf_secret="t", sse_max_streams=3, sse_max_streams_per_client=2)
    app = create_app(settings, cache=ServiceCache(), start_watchers=False)
    with TestClient(app, base_url="http://localhost") as c:
        with c.stream("GET", "/streams/services") as first, c.stream("GET", "/streams/services") as second:
            lines = [first.iter_lines(), second.iter_lines()]  # kept: a dropped iterator closes its stream
            for r, it in zip((first, second), lines, strict=True):
                assert r.status_code == 200 and events(it, 1)[0][0] == "rows"
            assert sse_gauge(c.get("/metrics").text) == 2
            third = c.get("/streams/services")  # the same client address: the per-client cap
            assert third.status_code == 429 and "close other dashboard tabs" in third.json()["detail"]
            assert third.headers["retry-after"] and third.headers["x-content-type-options"] == "nosniff"
            run_stream = c.get("/runs/abcdef012345/stream")  # a run stream is a stream too: refused
            assert run_stream.status_code == 429
            call(c, app.state.svc.hub.close)  # the streams end
        assert sse_gauge(c.get("/metrics").text) == 0


async def test_metrics_has_the_process_collector(app_client: tuple[Any, httpx.AsyncClient]) -> None:
    _, c = app_client
    text = (await c.get("/metrics")).text
    for name in (
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "python_info",
    ):
        assert f"\n{name}" in text, name
