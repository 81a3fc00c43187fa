"""HTTP/1.1 pass-through on real sockets: keep-alive, pipelining, framing, header rules."""

from __future__ import annotations

import json

import aiohttp

from tests.conftest import eventually
from tests.fakes.upstream import SeenRequest, ok
from tests.gateway import tables, wire
from tests.gateway.conftest import EAST, StartApp, StartGateway, StartRaw


async def test_keep_alive_reuses_one_upstream_connection(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok(b"hello"))
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    bodies = [(await conn.request(wire.get(f"/n/{i}"))).body for i in range(5)]
    await conn.close()
    assert bodies == [b"hello"] * 5
    assert upstream.connections == 1
    assert gw.counters.upstream_pool_hits == 4
    assert [r.target for r in upstream.requests] == [f"/n/{i}".encode() for i in range(5)]


async def test_pipelined_requests_are_answered_in_order(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(lambda req: _answer(req.target))
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    conn.send(b"".join(wire.get(f"/p/{i}") for i in range(10)), responses=10)
    responses = await conn.responses(10)
    await conn.close()
    assert [r.body for r in responses] == [f"/p/{i}".encode() for i in range(10)]
    assert all(r.status == 200 for r in responses)


def _answer(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)


async def test_hop_by_hop_headers_never_reach_the_upstream(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    request = wire.get(
        "/",
        extra=(
            "Connection: keep-alive, X-Secret-Hop\r\n"
            "Keep-Alive: timeout=5\r\n"
            "Proxy-Connection: keep-alive\r\n"
            "Proxy-Authorization: Basic Zm9vOmJhcg==\r\n"
            "TE: gzip\r\n"
            "Trailer: Expires\r\n"
            "Upgrade: h2c\r\n"
            "X-Secret-Hop: do-not-forward\r\n"
            "X-End-To-End: kept\r\n"
        ),
    )
    response = await conn.request(request)
    await conn.close()
    assert response.status == 200
    seen = {n.lower() for n in upstream.requests[0].names()}
    hop = {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"upgrade",
        b"x-secret-hop",
    }
    assert not seen & hop
    assert upstream.requests[0].values("x-end-to-end") == [b"kept"]


async def test_te_trailers_is_kept_for_grpc(raw_upstream: StartRaw, gateway: StartGateway) -> None:
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    await conn.request(wire.get("/", extra="TE: trailers\r\n"))
    await conn.close()
    assert upstream.requests[0].values("te") == [b"trailers"]


async def test_hop_by_hop_response_headers_are_removed(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Internal\r\nKeep-Alive: timeout=3\r\n"
        b"X-Internal: secret\r\nProxy-Authenticate: Basic\r\nX-Public: yes\r\n"
        b"Content-Length: 2\r\n\r\nok"
    )
    upstream = await raw_upstream(lambda req: answer)
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    response = await conn.request(wire.get())
    await conn.close()
    names = {n.lower() for n, _ in response.headers}
    assert names == {b"x-public", b"content-length"}
    assert response.body == b"ok"


async def test_forwarding_headers_and_request_id(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    await conn.request(
        wire.get("/", extra="X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n")
    )
    await conn.request(wire.get("/", extra="X-Request-Id: client-chosen-1\r\n"))
    await conn.close()
    first, second = upstream.requests
    # an untrusted client's X-Forwarded-For is replaced (trusted proxies: test_hostile.py)
    assert first.values("x-forwarded-for") == [b"127.0.0.1"]
    assert first.values("x-forwarded-proto") == [b"http"]  # the gateway's view, not the client's
    assert first.values("x-forwarded-host") == [b"shop.test"]
    generated = first.values("x-request-id")
    assert len(generated) == 1
    assert len(generated[0]) > 8
    assert second.values("x-request-id") == [b"client-chosen-1"]
    assert second.values("x-forwarded-for") == [b"127.0.0.1"]


async def test_raw_target_and_header_case_pass_byte_for_byte(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    target = "/a%2Fb/%7Euser/x;p=1?sig=AbC%3D%3D&x=%27q%27&&empty="
    await conn.request(wire.get(target, extra="x-MiXeD-CaSe: Value\r\nAccept-Encoding: gzip\r\n"))
    await conn.close()
    seen = upstream.requests[0]
    assert seen.target == target.encode()
    assert (b"x-MiXeD-CaSe", b"Value") in seen.headers
    assert seen.values("accept-encoding") == [b"gzip"]


async def test_set_cookie_twice_arrives_twice_and_nothing_is_injected(
    app_upstream: StartApp, gateway: StartGateway
) -> None:
    address = await app_upstream("east")
    gw = await gateway(tables.single(address))
    conn = await wire.Conn.open(gw.addresses[0])
    response = await conn.request(wire.get("/cookies"))
    await conn.close()
    assert response.values("set-cookie") == [b"a=1; Path=/", b"b=2; Path=/"]
    # Date and Server come from the upstream (aiohttp adds them), once each: never ours too.
    assert len(response.values("date")) == 1
    assert len(response.values("server")) == 1
    assert response.header("x-gateway-reason") is None


async def test_no_headers_are_injected_into_proxied_responses(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok(b"x"))
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    response = await conn.request(wire.get())
    await conn.close()
    assert response.headers == [(b"Content-Length", b"1")]


async def test_compressed_bodies_pass_untouched(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    gzipped = bytes.fromhex("1f8b08000000000000ff4b4c4a0600c241243503000000")
    answer = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%b" % (
        len(gzipped),
        gzipped,
    )
    upstream = await raw_upstream(lambda req: answer)
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    response = await conn.request(wire.get("/", extra="Accept-Encoding: gzip\r\n"))
    await conn.close()
    assert response.body == gzipped
    assert response.header("content-encoding") == b"gzip"


async def test_chunked_upload_and_chunked_download(
    app_upstream: StartApp, gateway: StartGateway
) -> None:
    address = await app_upstream("east")
    gw = await gateway(tables.single(address))
    conn = await wire.Conn.open(gw.addresses[0])
    pieces = [b"alpha", b"-" * 70000, b"omega"]
    body = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    conn.send(
        b"POST /stream HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    )
    response = await conn.response()
    await conn.close()
    assert response.status == 200
    assert response.header("transfer-encoding") == b"chunked"
    assert response.body == b"".join(pieces)


async def test_content_length_upload_is_forwarded_with_its_length(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    payload = bytes(range(256)) * 1000
    head = b"PUT /blob HTTP/1.1\r\nHost: shop.test\r\nContent-Length: %d\r\n\r\n" % len(payload)
    response = await conn.request(head + payload)
    await conn.close()
    assert response.status == 200
    seen = upstream.requests[0]
    assert seen.body == payload
    assert seen.values("content-length") == [str(len(payload)).encode()]
    assert seen.values("transfer-encoding") == []


async def test_read_until_close_response_is_rechunked_for_http11(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"
    upstream = await raw_upstream(lambda req: answer, close_after_response=True)
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    first = await conn.request(wire.get("/1"))
    second = await conn.request(wire.get("/2"))  # the client connection survives
    await conn.close()
    assert first.body == second.body == b"until the end"
    assert first.header("transfer-encoding") == b"chunked"
    assert first.keep_alive


async def test_head_204_and_304_are_framed_without_body(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    def respond(request: SeenRequest) -> bytes:
        if request.method == b"HEAD":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"
        if request.target == b"/204":
            return b"HTTP/1.1 204 No Content\r\n\r\n"
        if request.target == b"/304":
            return b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 99\r\n\r\n'
        return b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nafter"

    upstream = await raw_upstream(respond)
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    head = await conn.request(b"HEAD /big HTTP/1.1\r\nHost: shop.test\r\n\r\n", head=True)
    no_content = await conn.request(wire.get("/204"))
    not_modified = await conn.request(wire.get("/304"))
    after = await conn.request(wire.get("/after"))  # framing intact: the connection still works
    await conn.close()
    assert head.status == 200
    assert head.header("content-length") == b"5000"
    assert head.body == b""
    assert (no_content.status, no_content.body) == (204, b"")
    assert (not_modified.status, not_modified.body) == (304, b"")
    assert not_modified.header("etag") == b'"v1"'
    assert (after.status, after.body) == (200, b"after")
    assert upstream.connections == 1  # framing stayed intact upstream too: one connection


async def test_a_body_after_a_head_response_does_not_leak_into_the_next(
    app_upstream: StartApp, gateway: StartGateway
) -> None:
    # aiohttp's StreamResponse writes the body even for HEAD: that connection cannot be reused.
    address = await app_upstream("east")
    gw = await gateway(tables.single(address))
    conn = await wire.Conn.open(gw.addresses[0])
    head = await conn.request(
        b"HEAD /download?bytes=5000 HTTP/1.1\r\nHost: shop.test\r\n\r\n", head=True
    )
    after = await conn.request(wire.get("/after"))
    await conn.close()
    assert (head.status, head.body) == (200, b"")
    assert json.loads(after.body)["target"] == "/after"
    assert gw.counters.upstream_connects == 2


async def test_expect_100_continue_is_passed_through(
    app_upstream: StartApp, gateway: StartGateway
) -> None:
    address = await app_upstream("east")
    gw = await gateway(tables.single(address))
    conn = await wire.Conn.open(gw.addresses[0])
    conn.send(
        b"POST /upload HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    interim = await conn.responses(1, interim=True)
    assert interim[0].status == 100
    conn.send(b"hello")
    final = await conn.response()
    await conn.close()
    assert final.status == 200
    assert json.loads(final.body)["body_bytes"] == 5


async def test_connection_close_from_the_client_is_honoured(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    # the second request, after a `Connection: close` one, must not be answered
    conn.send(wire.get("/1", extra="Connection: close\r\n") + wire.get("/2"))
    response = await conn.response()
    assert response.header("connection") == b"close"
    assert await conn.close_after_peer()
    assert [r.target for r in upstream.requests] == [b"/1"]
    assert upstream.requests[0].values("connection") == []


async def test_connection_close_from_the_upstream_is_hop_by_hop(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    upstream = await raw_upstream(lambda req: answer, close_after_response=True)
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    first = await conn.request(wire.get("/1"))
    second = await conn.request(wire.get("/2"))
    await conn.close()
    assert first.header("connection") is None
    assert second.status == 200
    assert upstream.connections == 2  # a closed upstream connection was not reused


async def test_http10_client_gets_a_close_delimited_body(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    upstream = await raw_upstream(lambda req: answer)
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    response = await conn.request(b"GET /old HTTP/1.0\r\nHost: shop.test\r\n\r\n")
    assert await conn.close_after_peer()
    assert response.body == b"hello"
    assert response.header("transfer-encoding") is None
    assert upstream.requests[0].values("host") == [b"shop.test"]


async def test_aiohttp_client_through_the_gateway(
    app_upstream: StartApp, gateway: StartGateway
) -> None:
    address = await app_upstream("east")
    gw = await gateway(tables.single(address))
    host, port = gw.addresses[0]
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://{host}:{port}/stream", data=b"z" * 300_000, headers={"Host": "shop.test"}
        ) as response,
    ):
        body = await response.read()
    assert response.status == 200
    assert body == b"z" * 300_000


def _target(request: SeenRequest) -> bytes:
    return request.target


async def test_upstream_requests_use_the_endpoint_address(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok(), host=EAST)
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    await conn.request(wire.get("/x"))
    await conn.close()
    assert list(map(_target, upstream.requests)) == [b"/x"]


async def test_pipelined_requests_with_bodies(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(lambda req: _answer(req.body))
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    requests = [
        b"POST /1 HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 3\r\n\r\none",
        b"POST /2 HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\ntwo\r\n0\r\n\r\n",
        wire.get("/3"),
        b"PUT /4 HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 4\r\n\r\nfour",
    ]
    conn.send(b"".join(requests), responses=4)
    responses = await conn.responses(4)
    await conn.close()
    assert [r.body for r in responses] == [b"one", b"two", b"", b"four"]
    assert [r.target for r in upstream.requests] == [b"/1", b"/2", b"/3", b"/4"]


async def test_client_leaving_mid_response_drops_the_upstream_connection(
    app_upstream: StartApp, gateway: StartGateway
) -> None:
    address = await app_upstream("east")
    gw = await gateway(tables.single(address))
    conn = await wire.Conn.open(gw.addresses[0])
    conn.send(wire.get("/download?bytes=67108864"))
    first = await conn.reader.read(1024)
    await conn.close()
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    # Half a response cannot be finished on a later request: the connection is closed, not pooled.
    await eventually(lambda: gw.counters.upstream_open == 0)
    assert gw.pools.idle_count() == 0


async def test_absolute_form_target_routes_on_its_authority(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address))
    conn = await wire.Conn.open(gw.addresses[0])
    routed = await conn.request(
        b"GET http://shop.test/p?q=1 HTTP/1.1\r\nHost: elsewhere.test\r\n\r\n"
    )
    broken = await conn.request(b"GET http:///nohost HTTP/1.1\r\nHost: shop.test\r\n\r\n")
    await conn.close()
    assert routed.status == 200
    assert broken.status == 400
    seen = upstream.requests[0]
    assert seen.target == b"/p?q=1"
    assert seen.values("host") == [b"shop.test"]
