"""Admin API auth on a real gateway process: with a token, /status, /metrics and /counters need
`Authorization: Bearer <token>` (401 otherwise); /healthz and /readyz stay open; without a token
everything is open (loopback binding is then the only guard)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.replica import GatewayProcess, ProcessSettings
from tests.conftest import eventually
from tests.fakes.upstream import ok
from tests.gateway.conftest import TEST_SETTINGS, StartRaw
from tests.gateway.tables import single

TOKEN = "s3cret-admin-token"


@contextlib.asynccontextmanager
async def serving(token: str | None) -> AsyncIterator[tuple[str, GatewayProcess]]:
    """A gateway process with an admin port; yields the admin base URL."""
    process = GatewayProcess(
        ProcessSettings(gateway=TEST_SETTINGS, admin="127.0.0.1:0", admin_token=token)
    )
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(process.serve([], stop))
        await eventually(lambda: process.admin_address is not None)
        try:
            yield f"http://{process.admin_address}", process
        finally:
            stop.set()


async def status_of(client: aiohttp.ClientSession, url: str, **headers: str) -> int:
    async with client.get(url, headers=headers) as resp:
        await resp.read()
        return resp.status


@pytest.mark.parametrize("path", ["/status", "/metrics", "/counters"])
async def test_detailed_endpoints_need_the_bearer_token(raw_upstream: StartRaw, path: str) -> None:
    upstream = await raw_upstream(ok())
    async with serving(TOKEN) as (admin, process), aiohttp.ClientSession() as client:
        process.apply(single(upstream.address))
        without = await status_of(client, admin + path)
        wrong = await status_of(client, admin + path, Authorization="Bearer not-the-token")
        basic = await status_of(client, admin + path, Authorization=f"Basic {TOKEN}")
        right = await status_of(client, admin + path, Authorization=f"Bearer {TOKEN}")
        async with client.get(admin + path) as resp:
            challenge = resp.headers.get("WWW-Authenticate", "")
    assert (without, wrong, basic, right) == (401, 401, 401, 200)
    assert challenge.startswith("Bearer")


async def test_probes_stay_open_with_a_token(raw_upstream: StartRaw) -> None:
    upstream = await raw_upstream(ok())
    async with serving(TOKEN) as (admin, process), aiohttp.ClientSession() as client:
        before = await status_of(client, admin + "/readyz")
        process.apply(single(upstream.address))

        async def ready() -> bool:
            return await status_of(client, admin + "/readyz") == 200

        await eventually(ready)
        health = await status_of(client, admin + "/healthz")
    assert (before, health) == (503, 200)


async def test_without_a_token_the_admin_port_is_open(raw_upstream: StartRaw) -> None:
    upstream = await raw_upstream(ok())
    async with serving(None) as (admin, process), aiohttp.ClientSession() as client:
        process.apply(single(upstream.address))
        answered = [await status_of(client, admin + p) for p in ("/status", "/metrics")]
    assert answered == [200, 200]
