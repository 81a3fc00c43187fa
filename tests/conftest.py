"""Shared test fixtures: real servers on 127.0.0.1, both event loops, polling instead of sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import TypeVar

import pytest
import uvloop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Run every async test on both loops: production uses uvloop, asyncio is the reference."""
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


async def eventually(
    check: Callable[[], bool] | Callable[[], Awaitable[bool]],
    *,
    timeout_s: float = 5.0,
    interval_s: float = 0.01,
) -> None:
    """Poll `check` until it holds or the deadline passes (then fail with the check's name)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition {getattr(check, '__name__', check)!r} never held")
        await asyncio.sleep(interval_s)


T = TypeVar("T")


@contextlib.asynccontextmanager
async def sampled(
    read: Callable[[], Iterable[T]], *, period_s: float = 0.005
) -> AsyncIterator[set[T]]:
    """Every value `read` gives, read every `period_s` while the block runs: for "nothing moved
    meanwhile" checks (`period_s` is a sampling period, not a wait for a condition)."""
    seen: set[T] = set()

    async def sample() -> None:
        while True:
            seen.update(read())
            await asyncio.sleep(period_s)

    async with asyncio.TaskGroup() as group:
        task = group.create_task(sample(), name="sampled")
        try:
            yield seen
        finally:
            task.cancel()


RefusingPort = Callable[[str], int]


@pytest.fixture
def refusing_port() -> Iterator[RefusingPort]:
    """Ports that refuse connections until the test ends, on the loopback address asked for.

    Each is bound and never listens: a connection gets a reset (ECONNREFUSED), and as long as it
    stays bound no other socket is given it — a port bound and released at once could be handed
    to another test's upstream (pytest-xdist runs two at a time) before this test dials it.
    """
    held: list[socket.socket] = []

    def make(host: str) -> int:
        sock = socket.socket()
        held.append(sock)
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port

    try:
        yield make
    finally:
        for sock in held:
            sock.close()


@pytest.fixture
def closed_port(refusing_port: RefusingPort) -> int:
    """A port on 127.0.0.1 that refuses connections for the whole test (see `refusing_port`)."""
    return refusing_port("127.0.0.1")
