"""The demo member-cluster servers, over real loopback sockets on both event loops."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator

import aiohttp
import pytest

from fleetgate.demo_backend import BackendSpec, DemoBackend, echoed_headers, start_backends
from tests.conftest import eventually


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@pytest.fixture
async def east() -> AsyncIterator[DemoBackend]:
    spec = BackendSpec(cluster="east", version="v2", host="127.0.1.1", pod="web-v2-abc")
    async with start_backends([spec]) as (backend,):
        yield backend


async def statuses(client: aiohttp.ClientSession, url: str, count: int) -> list[int]:
    codes = []
    for _ in range(count):
        async with client.get(url) as resp:
            await resp.read()
            codes.append(resp.status)
    return codes


async def test_answers_any_path_with_its_identity(
    east: DemoBackend, client: aiohttp.ClientSession
) -> None:
    headers = [("X-Canary", "always"), ("Accept", "a/b"), ("Accept", "c/d"), ("Cookie", "s=1")]
    async with client.put(f"{east.url}/shop/cart%2F1?q=a+b", headers=headers) as resp:
        body = await resp.json()
        assert resp.status == 200
        assert (resp.headers["x-cluster"], resp.headers["x-version"]) == ("east", "v2")
        assert resp.headers["x-pod"] == "web-v2-abc"
    assert body["cluster"] == "east"
    assert body["version"] == "v2"
    assert body["pod"] == "web-v2-abc"
    assert body["path"] == "/shop/cart%2F1?q=a+b"
    assert body["method"] == "PUT"
    assert body["headers"]["x-canary"] == "always"
    assert body["headers"]["accept"] == "a/b, c/d"
    assert body["headers"]["cookie"] == "<redacted>"
    assert body["headers"]["host"] == east.address


async def test_binds_the_given_loopback_addresses_on_free_ports(
    client: aiohttp.ClientSession,
) -> None:
    specs = [BackendSpec("east", host="127.0.1.1"), BackendSpec("west", host="127.0.2.1")]
    async with start_backends(specs) as backends:
        assert [b.host for b in backends] == ["127.0.1.1", "127.0.2.1"]
        assert all(b.port > 0 for b in backends)
        for backend, cluster in zip(backends, ("east", "west"), strict=True):
            async with client.get(f"{backend.url}/") as resp:
                assert (await resp.json())["cluster"] == cluster
            assert backend.pod == f"{cluster}-v1-{backend.port}"


async def test_error_rate_fails_an_exact_counted_pattern(
    east: DemoBackend, client: aiohttp.ClientSession
) -> None:
    east.set_error_rate(0.25)
    codes = await statuses(client, f"{east.url}/x", 8)
    assert codes == [200, 200, 200, 500, 200, 200, 200, 500]
    # Health probes neither count nor fail.
    assert await statuses(client, f"{east.url}/healthz", 3) == [200, 200, 200]
    east.set_error_rate(1 / 3)
    assert await statuses(client, f"{east.url}/x", 6) == [200, 200, 500, 200, 200, 500]
    assert (east.requests, east.errors, east.health_probes) == (14, 4, 3)
    east.set_error_rate(1.0)
    assert await statuses(client, f"{east.url}/x", 2) == [500, 500]
    east.set_error_rate(0)
    assert await statuses(client, f"{east.url}/x", 2) == [200, 200]


async def test_failed_request_still_says_who_answered(
    east: DemoBackend, client: aiohttp.ClientSession
) -> None:
    east.set_error_rate(1.0)
    async with client.get(f"{east.url}/boom") as resp:
        assert resp.status == 500
        assert resp.headers["x-cluster"] == "east"
        assert (await resp.json())["error"] == "injected failure"


def test_error_rate_outside_zero_to_one_is_refused() -> None:
    backend = DemoBackend(BackendSpec("east"))
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        backend.set_error_rate(1.5)
    assert backend.error_rate == 0.0


async def test_health_fails_while_draining_and_recovers(
    east: DemoBackend, client: aiohttp.ClientSession
) -> None:
    async with client.get(f"{east.url}/healthz") as resp:
        assert (resp.status, (await resp.json())["status"]) == (200, "ok")
    east.drain()
    async with client.get(f"{east.url}/healthz") as resp:
        assert (resp.status, (await resp.json())["status"]) == (503, "draining")
    # Draining is about health only: traffic is still served.
    assert await statuses(client, f"{east.url}/", 1) == [200]
    east.fail_health(False)
    assert await statuses(client, f"{east.url}/healthz", 1) == [200]


async def test_added_latency_holds_the_answer_back(
    east: DemoBackend, client: aiohttp.ClientSession
) -> None:
    east.latency_s = 60.0
    with pytest.raises(asyncio.TimeoutError):
        await client.get(f"{east.url}/slow", timeout=aiohttp.ClientTimeout(total=0.2))
    east.latency_s = 0.0
    assert await statuses(client, f"{east.url}/fast", 1) == [200]


async def test_request_body_is_counted_and_hashed(
    east: DemoBackend, client: aiohttp.ClientSession
) -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB
    async with client.post(f"{east.url}/upload", data=io.BytesIO(payload)) as resp:
        body = await resp.json()
    assert body["body_bytes"] == len(payload)
    assert body["body_sha256"] == hashlib.sha256(payload).hexdigest()


async def test_websocket_echo(east: DemoBackend, client: aiohttp.ClientSession) -> None:
    async with client.ws_connect(f"{east.url}/ws") as ws:
        await ws.send_str("hello")
        assert await ws.receive_str(timeout=5) == "hello"
        await ws.send_bytes(b"\x00\x01\xff")
        assert await ws.receive_bytes(timeout=5) == b"\x00\x01\xff"
    # A plain request to /ws is an ordinary answer, not a failed upgrade.
    async with client.get(f"{east.url}/ws") as resp:
        assert (resp.status, (await resp.json())["path"]) == (200, "/ws")


async def test_stopped_backend_refuses_then_returns_on_the_same_port(
    east: DemoBackend, client: aiohttp.ClientSession
) -> None:
    port = east.port
    await east.stop()
    assert not east.running
    with pytest.raises(aiohttp.ClientConnectionError):
        await client.get(f"{east.url}/")
    await east.start()
    assert east.port == port
    assert await statuses(client, f"{east.url}/", 1) == [200]


async def test_backends_are_stopped_when_the_context_exits(client: aiohttp.ClientSession) -> None:
    async with start_backends([BackendSpec("east", host="127.0.1.2")]) as (backend,):
        url = backend.url
        assert await statuses(client, f"{url}/", 1) == [200]

    async def refused() -> bool:
        try:
            async with client.get(f"{url}/"):
                return False
        except aiohttp.ClientConnectionError:
            return True

    await eventually(refused)
    assert not backend.running


def test_echoed_headers_joins_repeats_and_redacts_credentials() -> None:
    echoed = echoed_headers(
        [("X-A", "1"), ("x-a", "2"), ("Authorization", "Bearer s3cret"), ("Host", "h")]
    )
    assert echoed == {"x-a": "1, 2", "authorization": "<redacted>", "host": "h"}
