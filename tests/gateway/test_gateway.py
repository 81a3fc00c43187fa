"""The Gateway object: table swaps, drain, close, the observer seam."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import StaleTableError
from gateway.exchange import Exchange
from gateway.server import Gateway
from tests.conftest import eventually
from tests.fakes.upstream import SeenRequest, ok
from tests.gateway import tables, wire
from tests.gateway.conftest import TEST_SETTINGS, StartGateway, StartRaw

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def test_a_stale_table_is_refused_and_the_live_one_stays(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok())
    old = tables.single(upstream.address)
    new = tables.single(upstream.address)
    gw = await gateway(new)
    with pytest.raises(StaleTableError, match="not newer"):
        gw.apply(old)
    assert gw.table is new
    conn = await wire.Conn.open(gw.addresses[0])
    assert (await conn.request(wire.get())).status == 200
    await conn.close()


async def test_drain_finishes_in_flight_requests_and_closes_keep_alive(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    held: list[SeenRequest] = []
    upstream = await raw_upstream(lambda req: held.append(req) if req.target == b"/slow" else OK)
    gw = await gateway(tables.single(upstream.address))
    idle = await wire.Conn.open(gw.addresses[0])
    assert (await idle.request(wire.get("/quick"))).status == 200
    busy = await wire.Conn.open(gw.addresses[0])
    busy.send(wire.get("/slow"))
    await eventually(lambda: len(held) == 1)

    async with asyncio.TaskGroup() as tasks:
        draining = tasks.create_task(gw.drain(timeout_s=5))
        assert await idle.closed_by_peer()  # idle keep-alive connections close at once
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(*gw.addresses[0])  # no longer accepting
        held[0].answer(OK)
        response = await busy.response()
        assert await busy.closed_by_peer()
    assert draining.result() is True
    await idle.close()
    await busy.close()
    assert response.status == 200
    assert response.header("connection") == b"close"


async def test_close_with_requests_in_flight_releases_everything(
    raw_upstream: StartRaw,
) -> None:
    upstream = await raw_upstream(lambda req: None)  # never answers
    gw = Gateway(TEST_SETTINGS, tables.single(upstream.address))
    await gw.start()
    conns = [await wire.Conn.open(gw.addresses[0]) for _ in range(3)]
    for conn in conns:
        conn.send(wire.get("/stuck"))
    await eventually(lambda: len(upstream.requests) == 3)
    await gw.close()
    for conn in conns:
        assert await conn.close_after_peer()
    await eventually(lambda: gw.counters.upstream_open == 0 and gw.counters.downstream_open == 0)
    await eventually(lambda: not upstream.open)


class _Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[int, str | None, str | None, str | None]] = []

    def exchange_done(self, exchange: Exchange) -> None:
        forward = exchange.forward
        endpoint = exchange.endpoint
        self.seen.append(
            (
                exchange.status,
                exchange.reason,
                forward.route if forward is not None else None,
                endpoint.cluster if endpoint is not None else None,
            )
        )


async def test_observer_sees_every_exchange(raw_upstream: StartRaw) -> None:
    upstream = await raw_upstream(ok())
    recorder = _Recorder()
    gw = Gateway(TEST_SETTINGS, tables.single(upstream.address), observer=recorder)
    await gw.start()
    try:
        conn = await wire.Conn.open(gw.addresses[0])
        await conn.request(wire.get("/"))
        await conn.request(wire.get("/", host="unknown.test"))
        await conn.close()
    finally:
        await gw.close()
    assert recorder.seen == [
        (200, None, "shop/main", "east"),
        (404, "no_route", None, None),
    ]
    assert gw.counters.responses[2] == 1
    assert gw.counters.responses[4] == 1
