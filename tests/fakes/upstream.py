"""Real upstream servers for data-plane tests, bound to loopback addresses that stand for clusters.

Two kinds:
* `upstream_app(name)`: an aiohttp application that behaves like a real service (echo, streamed
  upload and download, Set-Cookie twice, 204/304, WebSocket echo, Expect: 100-continue, a request
  that never gets an answer);
* `RawUpstream`: a byte-level HTTP/1.1 server that records every request exactly as it arrived
  (header names in their case, repeated headers, raw target) and answers with bytes a test
  chooses, for the corner cases aiohttp would normalise away (close-delimited bodies, connections
  closed after each response, broken responses).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from typing import cast

import httptools
from aiohttp import WSMsgType, web

CHUNK = 64 * 1024


def upstream_app(name: str) -> web.Application:
    """An aiohttp service whose answers say which upstream (`name`) served them."""

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        payload = {
            "upstream": name,
            "method": request.method,
            "target": request.raw_path,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers],
            "body_bytes": len(body),
        }
        return web.json_response(payload, headers={"X-Upstream": name})

    async def stream_back(request: web.Request) -> web.StreamResponse:
        # Echo the upload as it arrives, chunked: memory stays bounded on both sides.
        response = web.StreamResponse(headers={"X-Upstream": name})
        response.enable_chunked_encoding()
        await response.prepare(request)
        async for data in request.content.iter_any():
            await response.write(data)
        await response.write_eof()
        return response

    async def download(request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("bytes", "0"))
        response = web.StreamResponse(headers={"X-Upstream": name})
        if request.query.get("framing") == "chunked":
            response.enable_chunked_encoding()
        else:
            response.content_length = size
        await response.prepare(request)
        block = b"x" * CHUNK
        left = size
        while left > 0:
            await response.write(block[: min(left, CHUNK)])
            left -= CHUNK
        await response.write_eof()
        return response

    async def cookies(request: web.Request) -> web.Response:
        response = web.Response(text="two cookies")
        response.headers.add("Set-Cookie", "a=1; Path=/")
        response.headers.add("Set-Cookie", "b=2; Path=/")
        return response

    async def status(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        return web.Response(status=code, headers={"ETag": '"v1"', "X-Upstream": name})

    async def hang(request: web.Request) -> web.Response:
        await asyncio.Event().wait()  # never answers; the gateway's timeout must
        raise AssertionError("unreachable")

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                await ws.send_str(f"{name}:{message.data}")
            elif message.type is WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        return ws

    app = web.Application()
    app.router.add_post("/stream", stream_back)
    app.router.add_get("/download", download)
    app.router.add_get("/cookies", cookies)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/hang", hang)
    app.router.add_get("/ws", websocket)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


async def serve_app(app: web.Application, host: str) -> tuple[web.AppRunner, int]:
    """Serve `app` on `host`:<ephemeral>; returns the runner (clean it up) and the port."""
    # handler_cancellation: a request the gateway gave up on (timeout) stops its handler, as
    # the client went away; a short shutdown_timeout keeps test teardown quick.
    runner = web.AppRunner(
        app,
        access_log=None,
        auto_decompress=False,
        handler_cancellation=True,
        shutdown_timeout=1.0,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port: int = runner.addresses[0][1]
    return runner, port


@dataclasses.dataclass
class SeenRequest:
    """One request as the upstream received it."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    connection: int = 0  # which accepted connection (1, 2, ...) carried it
    on_connection: int = 0  # its position on that connection (1 = first)
    transport: asyncio.Transport | None = dataclasses.field(default=None, repr=False, compare=False)

    def answer(self, data: bytes) -> None:
        """Answer later (for requests `respond` left unanswered by returning None)."""
        assert self.transport is not None
        self.transport.write(data)

    def values(self, name: str) -> list[bytes]:
        key = name.lower().encode()
        return [v for n, v in self.headers if n.lower() == key]

    def names(self) -> list[bytes]:
        return [n for n, _ in self.headers]


# What a RawUpstream sends back: bytes, b"" to close the connection without answering, or None
# to leave the request unanswered (the test may call `SeenRequest.answer` later).
Respond = Callable[[SeenRequest], bytes | None]


def ok(body: bytes = b"ok") -> Respond:
    """Answer every request with 200 and `body` (Content-Length framed)."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
    return lambda request: answer


class _RawProtocol(asyncio.Protocol):
    def __init__(self, server: RawUpstream) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.current: SeenRequest | None = None
        self.number = 0
        self.count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike
        self.transport = transport = cast(asyncio.Transport, transport)
        self.server.connections += 1
        self.number = self.server.connections
        self.server.open.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        assert self.transport is not None
        self.server.open.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_begin(self) -> None:
        self.count += 1
        self.current = SeenRequest(b"", b"", [], connection=self.number, on_connection=self.count)
        self.current.transport = self.transport

    def on_url(self, url: bytes) -> None:
        assert self.current is not None
        self.current.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.current is not None
        self.current.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.current is not None
        self.current.method = self.parser.get_method()

    def on_body(self, body: bytes) -> None:
        assert self.current is not None
        self.current.body += body

    def on_message_complete(self) -> None:
        request, self.current = self.current, None
        assert request is not None
        assert self.transport is not None
        self.server.requests.append(request)
        answer = self.server.respond(request)
        if answer is None:
            return  # not now (maybe never)
        self.transport.write(answer)
        if not answer or self.server.close_after_response:
            self.transport.close()


class RawUpstream:
    """A byte-level HTTP/1.1 upstream on `host`:<ephemeral> that records what it receives."""

    def __init__(
        self, respond: Respond, host: str = "127.0.0.1", *, close_after_response: bool = False
    ) -> None:
        self.respond = respond
        self.host = host
        self.port = 0
        self.close_after_response = close_after_response
        self.requests: list[SeenRequest] = []
        self.connections = 0
        self.open: set[asyncio.Transport] = set()
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> RawUpstream:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _RawProtocol(self), self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def drop_idle(self) -> None:
        """Close every open connection from the server side (an upstream's idle timeout)."""
        for transport in list(self.open):
            transport.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self.drop_idle()
            await self._server.wait_closed()


def json_body(data: bytes) -> dict[str, object]:
    parsed: dict[str, object] = json.loads(data)
    return parsed
