"""Hostile input on real sockets: malformed and smuggling-shaped requests (400, closed, nothing
forwarded), head and body limits (431, 413), slow heads (408), idle and connection caps, and
forwarding/internal headers from untrusted clients."""

from __future__ import annotations

import pytest

from tests.conftest import eventually
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
    closed = await conn.close_after_peer()
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
    closed = await conn.close_after_peer()
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


# -- limits: 431, 413, 408, idle, connection cap ---------------------------------------------


def _head(extra: bytes = b"", method: bytes = b"GET") -> bytes:
    return method + b" /a HTTP/1.1\r\nHost: shop.test\r\n" + extra


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            _head(b"".join(b"X-Many-%d: v\r\n" % i for i in range(100))) + b"\r\n",
            id="101-headers",  # Host + 100
        ),
        pytest.param(
            # 59 fields of 1 KiB, then one more: the 60 KiB limit is crossed by the last field
            _head(b"".join(b"X-Big-%02d: %b\r\n" % (i, b"v" * 1024) for i in range(61))) + b"\r\n",
            id="over-60-KiB-of-fields",
        ),
        pytest.param(
            b"GET /" + b"a" * (61 * 1024) + b" HTTP/1.1\r\nHost: shop.test\r\n\r\n",
            id="over-60-KiB-target",
        ),
    ],
)
async def test_oversized_heads_are_431_and_closed(
    raw_upstream: StartRaw, gateway: StartGateway, request_bytes: bytes
) -> None:
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    response = await conn.request(request_bytes)
    closed = await conn.close_after_peer()
    assert response.status == 431
    assert response.header("x-gateway-reason") == b"headers_too_large"
    assert response.header("connection") == b"close"
    assert closed
    assert upstream.requests == []


async def test_exactly_100_headers_and_a_long_head_under_the_limit_pass(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    many = await conn.request(_head(b"".join(b"X-Many-%d: v\r\n" % i for i in range(99))) + b"\r\n")
    long = await conn.request(_head(b"X-Long: " + b"v" * (50 * 1024) + b"\r\n") + b"\r\n")
    await conn.close()
    assert (many.status, long.status) == (200, 200)
    assert len(upstream.requests) == 2


async def test_a_head_growing_over_several_reads_is_431_before_it_ends(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    # One header field that never ends: httptools buffers it out of sight of on_header, so the
    # gateway must count the reads themselves.
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address), max_header_bytes=4096)
    conn = await wire.Conn.open(gw.addresses[0])
    conn.send(_head(b"X-Endless: " + b"v" * 1024), responses=0)
    await eventually(lambda: gw.counters.requests == 1)
    response = await conn.request(b"v" * 5000)
    closed = await conn.close_after_peer()
    assert response.status == 431
    assert closed
    assert upstream.requests == []


async def test_content_length_over_the_body_limit_is_413_before_forwarding(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address), max_body_bytes=1000)
    conn = await wire.Conn.open(gw.addresses[0])
    response = await conn.request(_head(b"Content-Length: 1001\r\n", b"POST") + b"\r\n")
    closed = await conn.close_after_peer()
    assert response.status == 413
    assert response.header("x-gateway-reason") == b"body_too_large"
    assert closed
    assert upstream.connections == 0
    assert gw.counters.local_replies["body_too_large"] == 1


async def test_a_chunked_body_over_the_limit_is_413_and_never_completes_upstream(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address), max_body_bytes=1000)
    conn = await wire.Conn.open(gw.addresses[0])
    conn.send(_head(b"Transfer-Encoding: chunked\r\n", b"POST") + b"\r\n", responses=0)
    conn.send(b"258\r\n" + b"a" * 600 + b"\r\n", responses=0)  # 600 bytes: under the limit
    await eventually(lambda: upstream.connections == 1)
    response = await conn.request(b"258\r\n" + b"b" * 600 + b"\r\n")  # 1200: over
    closed = await conn.close_after_peer()
    assert response.status == 413
    assert closed
    assert upstream.requests == []  # the fake records complete requests only


async def test_a_body_at_the_limit_passes(raw_upstream: StartRaw, gateway: StartGateway) -> None:
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address), max_body_bytes=1000)
    conn = await wire.Conn.open(gw.addresses[0])
    fixed = await conn.request(_head(b"Content-Length: 1000\r\n", b"POST") + b"\r\n" + b"a" * 1000)
    chunked = await conn.request(
        _head(b"Transfer-Encoding: chunked\r\n", b"POST")
        + b"\r\n3e8\r\n"
        + b"b" * 1000
        + b"\r\n0\r\n\r\n"
    )
    await conn.close()
    assert (fixed.status, chunked.status) == (200, 200)
    assert [len(r.body) for r in upstream.requests] == [1000, 1000]


async def test_a_slow_head_is_408_after_the_header_timeout(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address), header_timeout_s=0.2)
    conn = await wire.Conn.open(gw.addresses[0])
    conn.send(b"GET /a HTTP/1.1\r\nHost: sh")  # and never the rest
    response = await conn.response()
    closed = await conn.close_after_peer()
    assert response.status == 408
    assert response.header("x-gateway-reason") == b"request_timeout"
    assert closed
    assert upstream.requests == []


async def test_a_connection_that_never_sends_is_closed_after_the_header_timeout(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address), header_timeout_s=0.2)
    conn = await wire.Conn.open(gw.addresses[0])
    closed = await conn.close_after_peer()  # EOF with no byte
    assert closed


async def test_idle_keep_alive_connections_are_closed_and_answered_ones_are_not_cut(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address), downstream_idle_s=0.3, header_timeout_s=0.1)
    conn = await wire.Conn.open(gw.addresses[0])
    response = await conn.request(wire.get("/1"))  # the header timeout no longer applies
    closed = await conn.close_after_peer()  # idle after a response: closed after downstream_idle_s
    assert response.status == 200
    assert closed
    assert gw.counters.local_replies["request_timeout"] == 0


async def test_connections_over_the_cap_are_closed_at_accept(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address), max_downstream_connections=2)
    first = await wire.Conn.open(gw.addresses[0])
    second = await wire.Conn.open(gw.addresses[0])
    await eventually(lambda: gw.counters.downstream_open == 2)
    third = await wire.Conn.open(gw.addresses[0])
    third_closed = await third.close_after_peer()
    answers = [(await c.request(wire.get())).status for c in (first, second)]
    await first.close()
    await eventually(lambda: gw.counters.downstream_open == 1)
    fourth = await wire.Conn.open(gw.addresses[0])  # room again
    after = await fourth.request(wire.get())
    for conn in (second, fourth):
        await conn.close()
    assert third_closed
    assert answers == [200, 200]
    assert after.status == 200
    assert gw.counters.downstream_refused == 1


# -- forwarding headers and internal headers ---------------------------------------------------

FORGED = (
    b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n"
    b"X-Forwarded-Host: www.example.test\r\n"
)


async def test_forwarding_headers_from_an_untrusted_peer_are_replaced(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address), trusted_proxies=("10.0.0.0/8",))
    conn = await wire.Conn.open(gw.addresses[0])
    await conn.request(_head(FORGED) + b"\r\n")
    await conn.close()
    (seen,) = upstream.requests
    assert seen.values("x-forwarded-for") == [b"127.0.0.1"]
    assert seen.values("x-forwarded-proto") == [b"http"]
    assert seen.values("x-forwarded-host") == [b"shop.test"]


async def test_forwarding_headers_from_a_trusted_proxy_are_kept_and_appended(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok())
    gw = await gateway(
        tables.single(upstream.address), trusted_proxies=("192.0.2.0/24", "127.0.0.0/8")
    )
    conn = await wire.Conn.open(gw.addresses[0])
    await conn.request(_head(FORGED) + b"\r\n")
    await conn.request(wire.get())  # a trusted proxy that sends none: the gateway's own
    await conn.close()
    first, second = upstream.requests
    assert first.values("x-forwarded-for") == [b"203.0.113.7, 127.0.0.1"]
    assert first.values("x-forwarded-proto") == [b"https"]
    assert first.values("x-forwarded-host") == [b"www.example.test"]
    assert second.values("x-forwarded-for") == [b"127.0.0.1"]
    assert second.values("x-forwarded-proto") == [b"http"]
    assert second.values("x-forwarded-host") == [b"shop.test"]


async def test_internal_headers_from_clients_are_dropped(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    forged = (
        b"X-Gateway-Reason: forged\r\nx-fleetgate-cohort: canary\r\n"
        b"X-FLEETGATE-ATTEMPT: 3\r\nX-Gateway: kept\r\nX-Request-Id: client-1\r\n"
    )
    await conn.request(_head(forged) + b"\r\n")
    await conn.close()
    (seen,) = upstream.requests
    names = {n.lower() for n in seen.names()}
    assert not {n for n in names if n.startswith((b"x-gateway-", b"x-fleetgate-"))}
    assert seen.values("x-gateway") == [b"kept"]  # only the prefixes are internal
    assert seen.values("x-request-id") == [b"client-1"]  # kept: an id for tracing, not authority
