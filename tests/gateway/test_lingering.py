"""Lingering close on real sockets: a client still sending when the gateway refuses its request
must be able to read the refusal (closing a socket with unread bytes sends a reset, which can
destroy the response on its way), and a lingering connection ends by the client's close or by
time."""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast

import pytest

from gateway.server import Gateway
from tests.conftest import eventually
from tests.fakes.upstream import ok
from tests.gateway import tables
from tests.gateway.conftest import EAST, StartGateway, StartRaw

BODY_BYTES = 8 * 1024 * 1024  # far more than the socket buffers hold
CHUNK = 64 * 1024


async def _send_large_body_and_read(
    address: tuple[str, int], head: bytes, body_bytes: int = BODY_BYTES
) -> tuple[bytes, int]:
    """Send `head` and `body_bytes` of body as fast as the gateway takes them, without reading;
    then read what came back. Returns (response bytes, body bytes that went out)."""
    reader, writer = await asyncio.open_connection(*address)
    sent = 0
    try:
        writer.write(head)
        chunk = b"x" * CHUNK
        async with asyncio.timeout(20):
            while sent < body_bytes:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
    except (ConnectionError, OSError):
        pass  # a reset while sending; what matters is what can still be read
    response = b""
    with contextlib.suppress(ConnectionError, OSError):
        async with asyncio.timeout(10):
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                response += data
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()
    return response, sent


def _post(length: int) -> bytes:
    return b"POST /upload HTTP/1.1\r\nHost: shop.test\r\nContent-Length: %d\r\n\r\n" % length


async def test_a_client_still_sending_reads_the_413(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address), max_body_bytes=1000)
    response, sent = await _send_large_body_and_read(gw.addresses[0], _post(BODY_BYTES))
    assert response.startswith(b"HTTP/1.1 413 "), response[:200]
    assert b"x-gateway-reason: body_too_large" in response.lower()
    assert sent == BODY_BYTES  # the gateway read and dropped the body rather than resetting
    assert upstream.connections == 0
    await eventually(lambda: not gw.ctx.downstreams)  # the client's close ended the linger


async def test_a_client_still_sending_reads_the_431(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address), max_headers=5)
    head = b"POST /upload HTTP/1.1\r\nHost: shop.test\r\n" + b"".join(
        b"X-Many-%d: v\r\n" % i for i in range(10)
    )
    response, _ = await _send_large_body_and_read(
        gw.addresses[0], head + b"Content-Length: %d\r\n\r\n" % BODY_BYTES
    )
    assert response.startswith(b"HTTP/1.1 431 "), response[:200]
    assert upstream.connections == 0


class _AnswersAtTheHead(asyncio.Protocol):
    """An upstream that refuses an upload as soon as it has the head, and reads on."""

    def __init__(self) -> None:
        self.seen: bytes | None = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.seen is not None:
            self.seen += data
            if b"\r\n\r\n" in self.seen:
                self.seen = None
                self.transport.write(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 11\r\n\r\nwho are you"
                )


async def test_an_upstream_refusing_a_large_upload_early_reaches_the_client(
    gateway: StartGateway,
) -> None:
    # The upstream answers before the body has arrived (an auth failure on an upload, say):
    # the gateway will not read a long body nobody uses, and closes, lingering.
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_AnswersAtTheHead, EAST, 0)
    try:
        port = server.sockets[0].getsockname()[1]
        gw = await gateway(tables.single(f"{EAST}:{port}"))
        response, _ = await _send_large_body_and_read(gw.addresses[0], _post(BODY_BYTES * 4))
    finally:
        server.close()
        await server.wait_closed()
    assert response.startswith(b"HTTP/1.1 401 "), response[:200]
    assert response.endswith(b"who are you")


@pytest.mark.parametrize("timeouts", [{"lingering_time_s": 0.3}, {"lingering_timeout_s": 0.3}])
async def test_lingering_ends_by_time_when_the_client_keeps_the_connection_open(
    raw_upstream: StartRaw, gateway: StartGateway, timeouts: dict[str, float]
) -> None:
    upstream = await raw_upstream(ok())
    gw: Gateway = await gateway(tables.single(upstream.address), max_body_bytes=10, **timeouts)
    reader, writer = await asyncio.open_connection(*gw.addresses[0])
    writer.write(_post(1000) + b"x" * 100)
    # The gateway half-closed: end of file after the response, while it still reads.
    response = await reader.read()
    assert response.startswith(b"HTTP/1.1 413 ")
    assert response.endswith(b"body_too_large\n")
    writer.write(b"x" * 100)  # still accepted and dropped while lingering
    await writer.drain()
    await eventually(lambda: not gw.ctx.downstreams, timeout_s=5)
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


async def test_a_drain_does_not_wait_for_a_lingering_client(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address), max_body_bytes=10)
    reader, writer = await asyncio.open_connection(*gw.addresses[0])
    writer.write(_post(1000) + b"x" * 100)
    response = await reader.read()  # the 413, then the half-close: lingering now
    assert response.startswith(b"HTTP/1.1 413 ")
    assert len(gw.ctx.downstreams) == 1
    # The lingering timeout (5 s of silence) is longer than this drain allows.
    assert await gw.drain(timeout_s=2)  # True: every client connection closed in time
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()
