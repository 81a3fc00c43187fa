"""Shared test fixtures: real servers on 127.0.0.1, both event loops, polling instead of sleeps."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

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


@pytest.fixture
def closed_port() -> int:
    """A loopback port that refuses connections (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
