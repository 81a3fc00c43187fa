"""A raw HTTP/1.1 client for gateway tests that need exact bytes: send what a test writes, parse
responses with httptools (keeping header case and repeats)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

import httptools

TIMEOUT_S = 10.0


@dataclasses.dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool

    def values(self, name: str) -> list[bytes]:
        key = name.lower().encode()
        return [v for n, v in self.headers if n.lower() == key]

    def header(self, name: str) -> bytes | None:
        found = self.values(name)
        return found[0] if found else None


class _ResponseReader:
    def __init__(self, *, head_requests: list[bool]) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: list[Response] = []
        self.head_requests = head_requests  # per expected response: was the request HEAD
        self._headers: list[tuple[bytes, bytes]] = []
        self._body = b""
        self.in_body = False  # headers seen, message not complete (a close-delimited body)

    def on_message_begin(self) -> None:
        self._headers, self._body = [], b""
        self.in_body = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        self.in_body = True
        if status >= 200 and self.head_requests and self.head_requests[0]:
            # httptools cannot be told a response answers HEAD: stop it at the headers.
            self._finish(status)
            raise _HeadDone

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self._finish(self.parser.get_status_code())

    def eof(self) -> None:
        """The connection closed: a body delimited by the close ends here."""
        if self.in_body:
            self._finish(self.parser.get_status_code(), keep_alive=False)

    def _finish(self, status: int, *, keep_alive: bool | None = None) -> None:
        self.in_body = False
        if status < 200:
            self.done.append(Response(status, self._headers, b"", True))
            return
        keep = self.parser.should_keep_alive() if keep_alive is None else keep_alive
        self.done.append(Response(status, self._headers, self._body, keep))
        self.head_requests.pop(0)


class _HeadDone(Exception):
    pass


class Conn:
    """One client connection to the gateway."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._heads: list[bool] = []
        self._rx = _ResponseReader(head_requests=self._heads)

    @classmethod
    async def open(cls, address: tuple[str, int]) -> Conn:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), TIMEOUT_S)
        return cls(reader, writer)

    def send(self, data: bytes, *, responses: int = 1, head: bool = False) -> None:
        """Write raw bytes that should produce `responses` final responses."""
        self._heads.extend([head] * responses)
        self.writer.write(data)

    async def responses(self, count: int, *, interim: bool = False) -> list[Response]:
        """Read until `count` responses (final ones unless `interim`) have arrived."""

        def ready() -> list[Response]:
            got = self._rx.done if interim else [r for r in self._rx.done if r.status >= 200]
            return got

        async with asyncio.timeout(TIMEOUT_S):
            while len(ready()) < count:
                data = await self.reader.read(65536)
                if not data:
                    self._rx.eof()
                    break
                self._feed(data)
        got = ready()[:count]
        taken = {id(r) for r in got}
        self._rx.done = [r for r in self._rx.done if id(r) not in taken]
        return got

    def _feed(self, data: bytes) -> None:
        try:
            self._rx.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _HeadDone):
                raise
            # After a HEAD response the parser still expects a body: start a new one. Bytes
            # after the HEAD response in the same read are lost, so read HEADs one at a time.
            self._rx.parser = httptools.HttpResponseParser(self._rx)

    async def response(self) -> Response:
        return (await self.responses(1))[0]

    async def request(self, data: bytes, *, head: bool = False) -> Response:
        self.send(data, head=head)
        return await self.response()

    async def closed_by_peer(self) -> bool:
        """True when the gateway closes the connection (EOF) before sending anything more."""
        async with asyncio.timeout(TIMEOUT_S):
            rest = await self.reader.read()
        return rest == b""

    async def close_after_peer(self) -> bool:
        """`closed_by_peer`, then close this side too, whatever the answer (or a timeout)."""
        try:
            return await self.closed_by_peer()
        finally:
            await self.close()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def get(path: str = "/", host: str = "shop.test", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()
