"""Upstream failures and pools: each failure is one local reply with a stable reason."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from gateway.settings import GatewaySettings
from policies.model import Timeouts, TrafficSettings
from tests.conftest import eventually
from tests.fakes.upstream import SeenRequest, ok
from tests.gateway import tables, wire
from tests.gateway.conftest import EAST, StartApp, StartGateway, StartRaw

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _quick(request_s: float) -> TrafficSettings:
    return TrafficSettings(timeouts=Timeouts(request_s=request_s, connect_s=1.0))


async def _one(gw_address: tuple[str, int], request: bytes) -> wire.Response:
    conn = await wire.Conn.open(gw_address)
    response = await conn.request(request)
    await conn.close()
    return response


async def test_refused_connection_is_a_503_with_a_reason(
    gateway: StartGateway, closed_port: int
) -> None:
    gw = await gateway(tables.single(f"127.0.0.1:{closed_port}"))
    response = await _one(gw.addresses[0], wire.get("/api"))
    assert response.status == 503
    assert response.header("x-gateway-reason") == b"upstream_connect_failed"
    assert response.header("x-request-id") is not None
    assert gw.counters.upstream_connect_failed == 1
    assert gw.counters.local_replies["upstream_connect_failed"] == 1


async def test_no_answer_within_the_rule_timeout_is_a_504(
    app_upstream: StartApp, gateway: StartGateway
) -> None:
    address = await app_upstream("east")
    gw = await gateway(tables.single(address, settings=_quick(0.2)))
    conn = await wire.Conn.open(gw.addresses[0])
    timed_out = await conn.request(wire.get("/hang"))
    after = await conn.request(wire.get("/fine"))  # the client connection is still good
    await conn.close()
    assert timed_out.status == 504
    assert timed_out.header("x-gateway-reason") == b"upstream_timeout"
    assert after.status == 200
    assert gw.counters.upstream_timeouts == 1


async def test_upstream_closing_without_answer_is_a_502(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(lambda req: b"")
    gw = await gateway(tables.single(upstream.address))
    response = await _one(gw.addresses[0], wire.get())
    assert response.status == 502
    assert response.header("x-gateway-reason") == b"upstream_reset"
    assert gw.counters.upstream_reset == 1


async def test_garbage_from_the_upstream_is_a_502(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(lambda req: b"SSH-2.0-OpenSSH\r\n\r\n")
    gw = await gateway(tables.single(upstream.address))
    response = await _one(gw.addresses[0], wire.get())
    assert response.status == 502
    assert response.header("x-gateway-reason") == b"upstream_protocol_error"


async def test_upstream_failure_after_the_response_started_closes_the_client(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    # Content-Length promises 100 bytes, the upstream sends 5 and closes: the client must see a
    # truncated response (the connection closes), never a second, made-up status.
    upstream = await raw_upstream(
        lambda req: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
        close_after_response=True,
    )
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    conn.send(wire.get())
    async with asyncio.timeout(wire.TIMEOUT_S):
        received = await conn.reader.read()
    await conn.close()
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert received.endswith(b"short")


async def test_stale_keep_alive_connection_is_retried_once_for_a_get(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    # Each upstream connection answers its first request only and drops the next one unanswered:
    # what a reused keep-alive connection looks like when the upstream closed it meanwhile.
    upstream = await raw_upstream(lambda req: OK if req.on_connection == 1 else b"")
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    first = await conn.request(wire.get("/1"))
    second = await conn.request(wire.get("/2"))
    await conn.close()
    assert (first.status, second.status) == (200, 200)
    assert gw.counters.upstream_stale_retries == 1
    assert [(r.target, r.connection) for r in upstream.requests] == [
        (b"/1", 1),
        (b"/2", 1),
        (b"/2", 2),
    ]


async def test_stale_connection_is_not_retried_for_a_post(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(lambda req: OK if req.on_connection == 1 else b"")
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    await conn.request(wire.get("/1"))
    post = await conn.request(
        b"POST /pay HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 3\r\n\r\nabc"
    )
    await conn.close()
    assert post.status == 502
    assert post.header("x-gateway-reason") == b"upstream_reset"
    assert gw.counters.upstream_stale_retries == 0


async def test_idle_upstream_connections_close_after_the_idle_timeout(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address), upstream_idle_s=0.1)
    assert (await _one(gw.addresses[0], wire.get())).status == 200
    assert gw.pools.idle_count() == 1
    gw._next_sweep = 0.0  # let the next tick sweep instead of waiting for the 1 s cadence

    def swept() -> bool:
        gw._next_sweep = 0.0
        return gw.pools.idle_count() == 0 and not upstream.open

    await eventually(swept)
    assert (await _one(gw.addresses[0], wire.get())).status == 200
    assert upstream.connections == 2


async def test_upstream_closing_an_idle_connection_is_noticed(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    await conn.request(wire.get("/1"))
    upstream.drop_idle()
    await eventually(lambda: gw.pools.idle_count() == 0)
    second = await conn.request(wire.get("/2"))
    await conn.close()
    assert second.status == 200
    assert gw.counters.upstream_stale_retries == 0


async def test_idle_connections_are_reused_last_in_first_out(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    held: list[SeenRequest] = []
    upstream = await raw_upstream(lambda req: held.append(req) if req.target != b"/next" else OK)
    gw = await gateway(tables.single(upstream.address))
    a = await wire.Conn.open(gw.addresses[0])
    b = await wire.Conn.open(gw.addresses[0])
    a.send(wire.get("/a"))
    b.send(wire.get("/b"))
    await eventually(lambda: len(held) == 2)
    first, second = sorted(held, key=lambda r: r.target)
    first.answer(OK)
    await a.response()
    await eventually(lambda: gw.pools.idle_count() == 1)
    second.answer(OK)
    await b.response()
    await eventually(lambda: gw.pools.idle_count() == 2)
    await a.request(wire.get("/next"))
    await a.close()
    await b.close()
    assert upstream.requests[-1].connection == second.connection  # the warmest one


async def test_a_backend_without_endpoints_is_a_503(gateway: StartGateway) -> None:
    empty = tables.member("east", {tables.service(): []})
    gw = await gateway(tables.table([empty], [tables.rule(tables.ref())]))
    response = await _one(gw.addresses[0], wire.get())
    assert response.status == 503
    assert response.header("x-gateway-reason") == b"no_healthy_backend"


async def test_an_unknown_service_is_a_500(gateway: StartGateway) -> None:
    east = tables.member("east", {tables.service(): [f"{EAST}:1"]})
    rule = tables.rule(tables.ref(tables.service("missing")))
    gw = await gateway(tables.table([east], [rule]))
    response = await _one(gw.addresses[0], wire.get())
    assert response.status == 500
    assert response.header("x-gateway-reason") == b"invalid_backend"


async def test_unknown_host_is_a_404(raw_upstream: StartRaw, gateway: StartGateway) -> None:
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address))
    response = await _one(gw.addresses[0], wire.get(host="elsewhere.test"))
    head = await wire.Conn.open(gw.addresses[0])
    head_reply = await head.request(b"HEAD / HTTP/1.1\r\nHost: elsewhere.test\r\n\r\n", head=True)
    await head.close()
    assert response.status == 404
    assert response.header("x-gateway-reason") == b"no_route"
    assert response.body == b"no_route\n"
    assert head_reply.status == 404
    assert head_reply.body == b""
    assert upstream.requests == []


def test_default_upstream_idle_timeout_is_below_common_upstream_ones() -> None:
    assert GatewaySettings().upstream_idle_s < 5.0  # uvicorn's and Node.js's keep-alive timeout


async def test_connect_timeout_is_a_503(gateway: StartGateway) -> None:
    # A listener whose accept queue is full drops further SYNs: connecting hangs.
    with socket.socket() as listener:
        listener.bind((EAST, 0))
        listener.listen(0)
        address = listener.getsockname()
        fillers = [socket.socket() for _ in range(4)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(address)
            settings = TrafficSettings(timeouts=Timeouts(request_s=10.0, connect_s=0.2))
            gw = await gateway(tables.single(f"{EAST}:{address[1]}", settings=settings))
            response = await _one(gw.addresses[0], wire.get())
        finally:
            for filler in fillers:
                filler.close()
    assert response.status == 503
    assert response.header("x-gateway-reason") == b"upstream_connect_failed"


async def test_local_reply_to_expect_continue_closes_the_connection(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    # The client waits for 100 Continue and may never send the body: reading on would take its
    # next request for that body, so a local reply closes the connection instead.
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    response = await conn.request(
        b"POST /x HTTP/1.1\r\nHost: nowhere.test\r\nContent-Length: 10\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    closed = await conn.close_after_peer()
    assert response.status == 404
    assert response.header("connection") == b"close"
    assert closed


async def test_a_connection_released_after_the_pools_closed_is_closed_not_kept(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    # A request still in flight while the gateway closes its pools (Gateway.close) finishes, and
    # its upstream connection is closed then: nobody would sweep an idle one any more.
    held: list[SeenRequest] = []
    upstream = await raw_upstream(held.append)
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    conn.send(wire.get("/slow"))
    await eventually(lambda: len(held) == 1)
    gw.pools.close()
    held[0].answer(OK)
    assert (await conn.response()).status == 200
    await conn.close()
    assert gw.pools.idle_count() == 0
    await eventually(lambda: not upstream.open)
