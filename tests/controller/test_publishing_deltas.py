"""The snapshot API's deltas and checksum-based answers, over real sockets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from controller.publishing import Publisher, PublishSettings
from controller.snapshot_api import BASE_HEADER, VERSION_HEADER
from policies import delta
from policies import snapshot as wire
from tests.controller.test_publishing import serving
from tests.gateway.test_subscriber_deltas import fleet


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def get(
    client: aiohttp.ClientSession, url: str, params: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    async with client.get(f"{url}/v1/snapshot", params=params) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def test_a_gateway_holding_a_recent_table_gets_a_delta(
    client: aiohttp.ClientSession,
) -> None:
    publisher = Publisher()
    first = publisher.publish(fleet(1, "127.0.1.1:8080"))
    publisher.publish(fleet(2, "127.0.1.2:8080"))
    latest = publisher.publish(fleet(3, "127.0.1.3:8080"))
    held, digests = wire.loads_digested(first.body)
    async with serving(publisher) as url:
        params = {"after": "1", "checksum": first.checksum, "wait": "0"}
        status, headers, body = await get(client, url, params)
        assert (status, headers[BASE_HEADER], headers[VERSION_HEADER]) == (200, first.checksum, "3")
        assert sorted(json.loads(body)["backends"]) == ["shop/web:80"]
        table, _ = delta.apply_delta(held, digests, body)
        assert table == latest.table
        # The same question again is answered from the cached delta.
        assert (await get(client, url, params))[2] == body
        # delta=0: the whole snapshot.
        status, headers, full = await get(client, url, params | {"delta": "0"})
        assert (status, BASE_HEADER in headers, full) == (200, False, latest.body)


async def test_an_unknown_or_too_old_base_gets_the_full_snapshot(
    client: aiohttp.ClientSession,
) -> None:
    publisher = Publisher(PublishSettings(delta_bases=2))
    first = publisher.publish(fleet(1, "127.0.1.1:8080"))
    publisher.publish(fleet(2, "127.0.1.2:8080"))
    latest = publisher.publish(fleet(3, "127.0.1.3:8080"))
    other_routes = publisher.publish(fleet(4, "127.0.1.4:8080", host="other.example"))
    async with serving(publisher) as url:
        for base in (first.checksum, "0" * 64, latest.checksum):
            status, headers, body = await get(client, url, {"checksum": base, "wait": "0"})
            assert (status, BASE_HEADER in headers, body) == (200, False, other_routes.body)


async def test_content_decides_across_replicas(client: aiohttp.ClientSession) -> None:
    publisher = Publisher()
    snapshot = publisher.publish(fleet(5_000, "127.0.1.1:8080"))
    async with serving(publisher) as url:
        # A version from another replica's clock, ahead of this one: other content is sent...
        other = wire.checksum(fleet(1, "127.0.1.9:8080"))
        status, headers, _ = await get(client, url, {"after": "9000", "checksum": other})
        assert (status, headers[VERSION_HEADER]) == (200, "5000")
        # ... the same content is not, and neither is the version the gateway just received.
        for held in (snapshot.checksum, other):
            after = "9000" if held == snapshot.checksum else "5000"
            params = {"after": after, "checksum": held, "wait": "0.05"}
            assert (await get(client, url, params))[0] == 304


async def test_a_bad_checksum_parameter_is_400(client: aiohttp.ClientSession) -> None:
    publisher = Publisher()
    publisher.publish(fleet(1, "127.0.1.1:8080"))
    async with serving(publisher) as url:
        status, _, body = await get(client, url, {"checksum": "xyz"})
    assert status == 400
    assert b"checksum must be 64 hex digits" in body
