"""Upgrade (WebSocket) through the gateway: the 101 is relayed, then raw bytes both ways."""

from __future__ import annotations

import aiohttp

from tests.conftest import eventually
from tests.fakes.upstream import ok
from tests.gateway import tables, wire
from tests.gateway.conftest import StartApp, StartGateway, StartRaw


async def test_websocket_echo_through_the_gateway(
    app_upstream: StartApp, gateway: StartGateway
) -> None:
    address = await app_upstream("east")
    gw = await gateway(tables.single(address))
    host, port = gw.addresses[0]
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://{host}:{port}/ws", headers={"Host": "shop.test"}) as ws,
    ):
        await ws.send_str("hello")
        text = await ws.receive_str(timeout=5)
        payload = bytes(range(256)) * 400  # 100 KiB: several reads and writes each way
        await ws.send_bytes(payload)
        echoed = await ws.receive_bytes(timeout=5)
    assert text == "east:hello"
    assert echoed == payload
    assert gw.counters.upgrades == 1
    await eventually(lambda: gw.counters.upstream_open == 0)  # both sides closed together


async def test_refused_upgrade_is_answered_and_the_connection_closed(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok(b"no upgrade here"))
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    response = await conn.request(
        wire.get("/ws", extra="Connection: Upgrade\r\nUpgrade: websocket\r\n") + b"early bytes"
    )
    closed = await conn.close_after_peer()
    assert response.body == b"no upgrade here"
    assert closed
    seen = upstream.requests[0]
    assert seen.values("upgrade") == [b"websocket"]
    assert seen.values("connection") == [b"upgrade"]
