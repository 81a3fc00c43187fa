"""Fuzzing the client side: thousands of malformed and adversarial request byte strings (built
from a grammar of request lines, headers, CL/TE combinations, chunked bodies with bad sizes,
folding, NULs, huge values, pipelining) against a real gateway whose upstream records what it
receives. The gateway never crashes (a good request is answered afterwards), never forwards a
smuggled request, and every answer starts with a valid status line (or the connection closes).

The gateway and upstream run on an event loop in a thread of their own; the test talks to them
with blocking sockets, so hypothesis drives a plain function. The client half-closes after
sending, so an incomplete request ends with the connection instead of waiting for a timeout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.server import Gateway
from tests.fakes.upstream import RawUpstream, ok
from tests.gateway import tables
from tests.gateway.conftest import EAST, TEST_SETTINGS

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: shop.test\r\n\r\n"
STATUS_LINE = re.compile(rb"HTTP/1\.1 [1-5][0-9][0-9] ")
RECV_TIMEOUT_S = 5.0


class Rig:
    """A gateway and its recording upstream, served by a loop in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.upstream: RawUpstream
        self.gateway: Gateway
        self.address: tuple[str, int]

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        self.upstream = await RawUpstream(ok(), EAST).start()
        settings = dataclasses.replace(
            TEST_SETTINGS, tick_s=0.05, header_timeout_s=2.0, downstream_idle_s=2.0
        )
        self.gateway = Gateway(settings, tables.single(self.upstream.address))
        await self.gateway.start()
        self.address = self.gateway.addresses[0]

    def stop(self) -> None:
        async def _stop() -> None:
            await self.gateway.close()
            await self.upstream.close()

        asyncio.run_coroutine_threadsafe(_stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def targets(self) -> list[bytes]:
        async def read() -> list[bytes]:
            return [r.target for r in self.upstream.requests]

        return asyncio.run_coroutine_threadsafe(read(), self.loop).result(10)

    def exchange(self, data: bytes) -> tuple[bytes, bool]:
        """Send `data`, half-close; everything the gateway sent until it closed, and whether
        the close was a reset (it refused with our bytes unread: its answer may be lost)."""
        with socket.create_connection(self.address, timeout=RECV_TIMEOUT_S) as sock:
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before reading everything: what it answered still counts
            received = b""
            while True:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    return received, True
                if not chunk:
                    return received, False
                received += chunk


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    started = Rig()
    started.start()
    yield started
    started.stop()


# -- the grammar ------------------------------------------------------------------------------

token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
field_value = st.binary(max_size=40).map(
    lambda b: bytes(c for c in b if 0x20 <= c < 0x7F or c == 0x09).strip()
)
benign_header = st.tuples(token, field_value).map(
    lambda t: b"X-" + t[0].encode() + b": " + t[1] + b"\r\n"
)


@st.composite
def good_request(draw: st.DrawFn, target: bytes) -> bytes:
    """A well-formed request the upstream is expected to see (with `target`)."""
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE"]))
    headers = b"".join(draw(st.lists(benign_header, max_size=5)))
    body = draw(st.binary(max_size=64))
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    head = method + b" " + target + b" HTTP/1.1\r\nHost: shop.test\r\n" + headers
    if framing == "length" or (framing == "none" and body):
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    if framing == "chunked":
        chunks = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in (body[:10], body[10:]) if p)
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    return head + b"\r\n"


HEAD = b"POST /bad HTTP/1.1\r\nHost: shop.test\r\n"
# Each of these is refused (400/431/413) and the gateway reads nothing after it: SMUGGLED, sent
# right behind, must never reach the upstream.
BAD_SHAPES = [
    HEAD + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
    HEAD + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    HEAD + b"Content-Length: 5, 6\r\n\r\nhello",
    HEAD + b"Content-Length: -5\r\n\r\n",
    HEAD + b"Content-Length: 0x5\r\n\r\nhello",
    HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    HEAD + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    HEAD + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    HEAD + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    HEAD + b"Transfer-Encoding: chunked\r\n\r\n-1\r\nhello\r\n0\r\n\r\n",
    HEAD + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    HEAD + b"X-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    HEAD + b"X-Nul: a\x00b\r\n\r\n",
    b"GET /a\x00b HTTP/1.1\r\nHost: shop.test\r\n\r\n",
    HEAD + b"Host: evil.test\r\n\r\n",
    b"GET /a HTTP/1.1\r\nX-No-Host: 1\r\n\r\n",
    HEAD + b"Bad Name: x\r\n\r\n",
    HEAD + b"NoColon\r\n\r\n",
    b"CONNECT shop.test:443 HTTP/1.1\r\nHost: shop.test:443\r\n\r\n",
    HEAD + b"".join(b"X-%d: v\r\n" % i for i in range(120)) + b"\r\n",
    HEAD + b"X-Huge: " + b"v" * (70 * 1024) + b"\r\n\r\n",
    HEAD + b"Content-Length: 99999999999\r\n\r\n",
]


@st.composite
def bad_request(draw: st.DrawFn) -> bytes:
    shape = draw(st.sampled_from(BAD_SHAPES))
    # mutate the casing and spacing of the CL/TE names a little: still refused
    if draw(st.booleans()):
        shape = shape.replace(b"Transfer-Encoding", b"transfer-encoding").replace(
            b"Content-Length", b"CONTENT-LENGTH"
        )
    return shape + SMUGGLED


@st.composite
def conversation(draw: st.DrawFn) -> tuple[bytes, list[bytes], bool]:
    """Pipelined requests: some good ones, maybe one bad one (then SMUGGLED), maybe noise.

    Returns the bytes, the targets the upstream may see (in order), and whether the stream
    contains a refused request.
    """
    number = draw(st.integers(0, 10**9))
    goods = draw(st.integers(0, 3))
    parts = [draw(good_request(b"/ok-%d-%d" % (number, i))) for i in range(goods)]
    allowed = [b"/ok-%d-%d" % (number, i) for i in range(goods)]
    ending = draw(st.sampled_from(["bad", "noise", "none"]))
    if ending == "bad":
        parts.append(draw(bad_request()))
    elif ending == "noise":
        # No SMUGGLED after noise: llhttp skips stray CRLFs, so noise may be harmless.
        parts.append(draw(st.binary(min_size=1, max_size=200)))
    return b"".join(parts), allowed, ending == "bad"


# -- the property ------------------------------------------------------------------------------


@settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(conversation())
def test_adversarial_bytes_never_crash_never_smuggle_always_answer_or_close(
    rig: Rig, convo: tuple[bytes, list[bytes], bool]
) -> None:
    data, allowed, refused = convo
    before = len(rig.targets())
    answer, reset = rig.exchange(data)
    seen = rig.targets()[before:]
    assert b"/smuggled" not in seen
    assert seen == allowed[: len(seen)]  # only the good ones, in order, none after a refusal
    if answer:
        assert STATUS_LINE.match(answer), answer[:80]
    if refused and not reset:
        assert re.search(rb"HTTP/1\.1 4(00|13|31) ", answer), answer[-300:]
    # still alive: a good request on a new connection is answered and forwarded
    after, _ = rig.exchange(b"GET /alive HTTP/1.1\r\nHost: shop.test\r\n\r\n")
    assert after.startswith(b"HTTP/1.1 200 ")
