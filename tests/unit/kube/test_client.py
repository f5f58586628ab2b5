"""The per-call deadline of actions and the keepalive of watch connections (no cluster needed)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from app.kube import client
from app.kube.client import ApiTimeout, bounded, keep_alive
from app.kube.waiting import reporting_to


async def test_a_quick_call_returns_its_value_and_says_nothing():
    notes: list[str | None] = []

    async def call() -> int:
        return 7

    with reporting_to(notes.append):
        assert await bounded(call(), "reading pod x") == 7
    assert [n for n in notes if n] == []


async def test_a_slow_call_says_it_waits_then_clears_the_note(monkeypatch):
    monkeypatch.setattr(client, "SLOW_CALL_S", 0.0)
    notes: list[str | None] = []
    answer = asyncio.Event()

    async def call() -> str:
        await answer.wait()
        return "ok"

    with reporting_to(notes.append):
        task = asyncio.create_task(bounded(call(), "creating probe pod ns/p"))
        for _ in range(100):  # bounded poll of the loop
            if notes:
                break
            await asyncio.sleep(0)
        assert notes == ["waiting for the apiserver (creating probe pod ns/p)"]
        answer.set()
        assert await task == "ok"
        assert notes[-1] is None


async def test_a_call_without_answer_raises_a_timeout_naming_it():
    notes: list[str | None] = []

    async def hang() -> None:
        await asyncio.Event().wait()

    with reporting_to(notes.append), pytest.raises(ApiTimeout) as caught:
        await bounded(hang(), "reading probe pod ns/p", timeout_s=0.01)
    assert str(caught.value) == "the apiserver did not answer reading probe pod ns/p within 0.01 s"
    assert isinstance(caught.value, TimeoutError)
    assert "no answer to reading probe pod ns/p" in str(notes[-2])
    assert notes[-1] is None  # leaving reporting_to clears the note


async def test_no_reporter_no_problem():
    async def call() -> int:
        return 1

    assert await bounded(call(), "x") == 1


class _Transport:
    def __init__(self, sock: Any) -> None:
        self.sock = sock

    def get_extra_info(self, name: str) -> Any:
        return self.sock if name == "socket" else None


class _Connection:
    def __init__(self, sock: Any) -> None:
        self.transport = _Transport(sock)


class _Response:
    def __init__(self, sock: Any) -> None:
        self.connection = _Connection(sock)


def test_keep_alive_sets_tcp_keepalive_on_the_watch_socket():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        keep_alive(_Response(sock))
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == client.KEEPALIVE_IDLE_S
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == client.KEEPALIVE_COUNT


def test_keep_alive_ignores_responses_without_a_socket():
    keep_alive(object())
    keep_alive(_Response(None))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        keep_alive(_Response(sock))  # not TCP: left alone, no exception
