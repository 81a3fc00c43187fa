"""Fixtures for data-plane socket tests: upstream servers on cluster addresses, gateways."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from gateway.server import Gateway
from gateway.settings import GatewaySettings, Listener
from policies.table import RoutingTable
from tests.fakes.upstream import RawUpstream, Respond, serve_app, upstream_app

# Loopback addresses standing for member clusters (Linux answers on all of 127.0.0.0/8).
EAST = "127.0.1.1"
EAST_2 = "127.0.1.2"
WEST = "127.0.2.1"
MIRROR = "127.0.3.1"

StartApp = Callable[..., Awaitable[str]]
StartRaw = Callable[..., Awaitable[RawUpstream]]
StartGateway = Callable[..., Awaitable[Gateway]]

TEST_SETTINGS = GatewaySettings(listeners=(Listener("127.0.0.1", 0),), tick_s=0.02)


@pytest.fixture
async def app_upstream() -> AsyncIterator[StartApp]:
    """Start `upstream_app(name)` on a host; returns "host:port"."""
    runners: list[web.AppRunner] = []

    async def start(name: str, host: str = EAST) -> str:
        runner, port = await serve_app(upstream_app(name), host)
        runners.append(runner)
        return f"{host}:{port}"

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
async def raw_upstream() -> AsyncIterator[StartRaw]:
    servers: list[RawUpstream] = []

    async def start(respond: Respond, host: str = EAST, **kwargs: Any) -> RawUpstream:
        server = await RawUpstream(respond, host, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def gateway() -> AsyncIterator[StartGateway]:
    """Start a gateway on 127.0.0.1:<ephemeral> for a table; closed after the test."""
    started: list[Gateway] = []

    async def start(table: RoutingTable, **settings: Any) -> Gateway:
        gw = Gateway(dataclasses.replace(TEST_SETTINGS, **settings), table)
        await gw.start()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        await gw.close()
