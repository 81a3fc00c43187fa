"""Malformed and smuggling-shaped requests: 400, connection closed, nothing forwarded."""

from __future__ import annotations

import pytest

from tests.fakes.upstream import ok
from tests.gateway import tables, wire
from tests.gateway.conftest import StartGateway, StartRaw

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: shop.test\r\n\r\n"


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            b"POST /a HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 4\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
            id="cl-and-te",
        ),
        pytest.param(
            b"POST /a HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5\r\nContent-Length: 40\r\n"
            b"\r\nhello" + SMUGGLED,
            id="two-content-lengths",
        ),
        pytest.param(
            b"POST /a HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            b"0\r\n\r\n" + SMUGGLED,
            id="te-other-than-chunked",
        ),
        pytest.param(
            b"POST /a HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
            id="te-twice",
        ),
        pytest.param(
            b"GET /a HTTP/1.1\r\nHost: shop.test\r\nX-Folded: a\r\n b\r\n\r\n", id="obs-fold"
        ),
        pytest.param(
            b"GET /a HTTP/1.1\r\nHost: shop.test\r\nHost: evil.test\r\n\r\n", id="two-hosts"
        ),
        pytest.param(b"GET /a HTTP/1.1\r\nUser-Agent: x\r\n\r\n", id="http11-without-host"),
        pytest.param(b"GET /a HTTP/1.1\r\nHost shop.test\r\n\r\n", id="header-without-colon"),
        pytest.param(b"GET /a\x00b HTTP/1.1\r\nHost: shop.test\r\n\r\n", id="nul-in-target"),
        pytest.param(
            b"CONNECT shop.test:443 HTTP/1.1\r\nHost: shop.test:443\r\n\r\n", id="connect"
        ),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", id="tls-on-plain-port"),
    ],
)
async def test_refused_with_400_and_close_and_never_forwarded(
    raw_upstream: StartRaw, gateway: StartGateway, request_bytes: bytes
) -> None:
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    response = await conn.request(request_bytes)
    closed = await conn.closed_by_peer()
    await conn.close()
    assert response.status == 400
    assert response.header("x-gateway-reason") == b"bad_request"
    assert response.header("connection") == b"close"
    assert closed
    assert upstream.requests == []
    assert gw.counters.local_replies["bad_request"] == 1


async def test_bad_chunk_inside_a_streaming_body_never_completes_upstream(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    # The head and first chunk are already on their way upstream when the broken chunk size
    # arrives: the upstream must never see a complete request (nor the smuggled one).
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    conn.send(
        b"POST /a HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    )
    conn.send(b"zz\r\n" + SMUGGLED, responses=0)
    response = await conn.response()
    closed = await conn.closed_by_peer()
    await conn.close()
    assert response.status == 400
    assert closed
    assert upstream.requests == []  # the fake records complete requests only


async def test_requests_before_a_malformed_one_are_still_answered(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok(b"fine"))
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    conn.send(wire.get("/1") + b"BROKEN\r\n\r\n", responses=2)
    first, second = await conn.responses(2)
    await conn.close()
    assert (first.status, first.body) == (200, b"fine")
    assert second.status == 400
    assert [r.target for r in upstream.requests] == [b"/1"]
