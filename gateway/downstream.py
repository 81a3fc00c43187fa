"""Client side of the proxy: one `asyncio.Protocol` per downstream connection. I/O: the client
socket (through its transport).

httptools parses requests as bytes arrive; each request becomes an `Exchange`. Responses go out
in request order: the first exchange is answered while later pipelined ones wait (parsed, with
reading paused, so at most one read's worth of bytes is held). Reading also pauses while a
request body has nowhere to go (no upstream connection yet, or the upstream's write buffer is
full); writing back-pressure pauses the upstream connection's reading instead.

Refused at parse time, with 400 and `Connection: close` and nothing forwarded (RFC 9112 §6.1,
§6.3 and §3.2): anything llhttp rejects (malformed lines, obsolete line folding, both
Content-Length and Transfer-Encoding, duplicate Content-Length, bad chunk sizes), a
Transfer-Encoding other than plain `chunked`, a missing (HTTP/1.1) or repeated Host, CONNECT.
After an `Upgrade` request the connection only relays raw bytes once the upstream said 101.

Limits (GatewaySettings, docs/THREAT_MODEL.md): a head over `max_header_bytes` or with more than
`max_headers` fields is 431; a body over `max_body_bytes` is 413 (at the head for Content-Length,
mid-stream for chunked); connections over `max_downstream_connections` are closed at accept.
X-Forwarded-For/-Proto/-Host are believed only from `trusted_proxies` (gateway.listeners);
headers named `x-gateway-*`/`x-fleetgate-*` are dropped. The head timeout (408), idle limits
and the lingering close are in gateway.deadlines.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import cast

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from gateway import headers as h
from gateway.context import ProxyContext
from gateway.deadlines import linger
from gateway.errors import REASONS
from gateway.exchange import (
    DISCARD_BODY_BYTES,
    PAUSE_DONE,
    PAUSE_PIPELINE,
    PAUSE_UPSTREAM,
    Exchange,
)
from gateway.headers import BODY_CHUNKED, BODY_LENGTH
from gateway.listeners import BoundListener, trusted_peer
from gateway.replies import abort, reply

log = logging.getLogger(__name__)

_KINDS = h.REQUEST_KINDS
_SPECIAL = h.REQUEST_SPECIAL


class _StopParsing(Exception):
    """Raised from a parser callback to stop reading a connection that is being refused."""


class DownstreamProtocol(asyncio.Protocol):
    __slots__ = (
        "_active",
        "_admitted",
        "_body_bytes",
        "_broken",
        "_eof",
        "_ex",
        "_fresh",
        "_head_bytes",
        "_head_count",
        "_head_since",
        "_held",
        "_host_raw",
        "_host_str",
        "_linger_until",
        "_max_body",
        "_max_head",
        "_max_headers",
        "_parser",
        "_paused",
        "_queue",
        "_splice",
        "closing",
        "ctx",
        "forwarded",
        "last_seen",
        "listener",
        "peer",
        "transport",
        "trusted",
        "write_paused",
    )

    def __init__(self, ctx: ProxyContext, listener: BoundListener) -> None:
        self.ctx = ctx
        self.listener = listener
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set on accept
        self.peer = b""
        self.forwarded = b""  # X-Forwarded-For and -Proto lines for clients that sent no XFF
        self.closing = False
        self.write_paused = False
        self.last_seen = ctx.now
        self._parser = HttpRequestParser(self)
        self._ex: Exchange | None = None  # the request being parsed
        self._active: Exchange | None = None  # the request being answered
        self._queue: deque[Exchange] | None = None  # parsed requests waiting their turn
        self._paused = 0  # PAUSE_* bits; reading is paused while any is set
        self._broken = False  # refused, or the last request said close: parse nothing more
        self._eof = False  # the client half-closed: answer what was read, then close
        self._held: list[bytes] | None = None  # bytes after an Upgrade request, until 101
        self._splice: Exchange | None = None  # after 101: raw bytes both ways
        self._host_raw: bytes | None = None  # one-entry cache: clients repeat their Host
        self._host_str = ""
        settings = ctx.settings
        self._max_head = settings.max_header_bytes
        self._max_headers = settings.max_headers
        self._max_body = settings.max_body_bytes
        self._head_bytes = 0  # request line and header bytes of the head being parsed
        self._head_count = 0
        self._head_since = ctx.now  # accept, then the first byte of each request
        self._body_bytes = 0
        self._admitted = False  # counted among the open connections (under the cap)
        self._fresh = True  # no request started yet
        self._linger_until = 0.0  # gateway.deadlines.linger: closed by then (0: not)
        self.trusted = False  # the peer is a trusted proxy: its X-Forwarded-* are kept

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike
        self.transport = transport = cast(asyncio.Transport, transport)
        ctx = self.ctx
        settings = ctx.settings
        if len(ctx.downstreams) >= settings.max_downstream_connections:
            # Over the cap: accepted and closed at once, before any byte is read (cheaper and
            # more predictable than pausing accept, which leaves clients queued in the backlog).
            ctx.counters.downstream_refused += 1
            self.closing = True
            transport.close()
            return
        self._admitted = True
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]).encode() if peer else b"unknown"
        self.trusted = trusted_peer(str(peer[0]) if peer else "", settings.trusted_proxies)
        self.forwarded = b"X-Forwarded-For: " + self.peer + self.listener.forwarded
        self._head_since = ctx.now
        transport.set_write_buffer_limits(settings.write_high_bytes, settings.write_low_bytes)
        self.ctx.downstreams.add(self)
        self.ctx.all_closed.clear()
        counters = self.ctx.counters
        counters.downstream_connections += 1
        counters.downstream_open += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if not self._admitted:
            return
        ctx = self.ctx
        ctx.downstreams.discard(self)
        ctx.counters.downstream_open -= 1
        if not ctx.downstreams:
            ctx.all_closed.set()
        active = self._active
        if active is not None:
            self._active = None
            abort(active)
        self._queue = None

    def eof_received(self) -> bool | None:
        if self._linger_until:
            return None  # the client finished sending: the lingering close ends
        # A client may half-close after its last request and still read the answer. A spliced
        # (upgraded) connection simply ends, and so does one that stops inside a request.
        if self._active is not None and self._splice is None and self._ex is None:
            self._eof = True
            self._stop_reading()
            return True
        return None

    def pause_writing(self) -> None:
        self.write_paused = True
        up = self._active.up if self._active is not None else None
        if up is not None and not up.read_paused:
            up.read_paused = True
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        up = self._active.up if self._active is not None else None
        if up is not None and up.read_paused:
            up.read_paused = False
            up.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.last_seen = self.ctx.now
        splice = self._splice
        if splice is not None:
            if splice.up is not None:
                splice.up.transport.write(data)
            return
        if self._held is not None:
            self._held.append(data)
            return
        if self._broken:
            return
        ex = self._ex
        in_head = ex is not None and not ex.parsed
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade as upgrade:
            # The Upgrade request is complete; what follows belongs to the new protocol and
            # waits for the upstream's 101 (or is dropped with the connection otherwise).
            self._held = [data[upgrade.args[0] :]]
            self._stop_reading()
        except HttpParserError as exc:
            cause = exc.__context__
            if cause is not None and not isinstance(cause, _StopParsing):
                # A bug in our callbacks, not bad input: say so loudly, answer 500, close.
                log.error("request handling failed peer=%s", self.peer, exc_info=cause)
                self._refuse("internal_error")
            elif not self._broken:
                self._refuse("bad_request")
            return
        if in_head and ex is not None and self._ex is ex and not ex.parsed:
            # A head spanning reads: httptools keeps a partial field in its own buffers, out of
            # sight of on_header, so whole reads inside one head are counted here too.
            self._head_bytes += len(data)
            if self._head_bytes > self._max_head:
                self._refuse("headers_too_large")

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._broken:
            raise _StopParsing  # bytes after a refused request or one that said close
        self._ex = Exchange(self)
        self._head_bytes = self._head_count = self._body_bytes = 0
        self._fresh = False
        self._head_since = self.ctx.now
        self.ctx.counters.requests += 1

    def on_url(self, url: bytes) -> None:
        ex = self._ex
        assert ex is not None
        ex.target += url
        self._head_bytes += len(url)
        if self._head_bytes > self._max_head:
            self._too_large()

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self._ex
        assert ex is not None
        if ex.parsed:
            return  # trailer fields of a chunked body: not forwarded (RFC 9110 §6.5.1)
        self._head_count += 1
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self._max_head or self._head_count > self._max_headers:
            self._too_large()
        kind = _KINDS.get(name)
        if kind is None:
            lowered = name.lower()
            kind = _SPECIAL.get(lowered)
            if kind is None:
                kind = h.REQ_DROP if lowered.startswith(h.INTERNAL_PREFIXES) else 0
        if kind == 0:
            ex.headers += (name, b": ", value, b"\r\n")
        elif kind == h.REQ_HOST:
            if ex.host is not None:
                ex.bad = "bad_request"  # two Host headers (RFC 9112 §3.2)
            ex.host = value
        elif kind == h.REQ_CONTENT_LENGTH:
            ex.content_length = int(value)
            ex.headers += (name, b": ", value, b"\r\n")
        elif kind == h.REQ_CONNECTION:
            lowered = value.lower()
            if lowered == b"keep-alive":
                ex.asked_keep_alive = True
            elif lowered not in h.PLAIN_CONNECTION:
                if b"keep-alive" in lowered:
                    ex.asked_keep_alive = True
                if ex.conn_values is None:
                    ex.conn_values = [value]
                else:
                    ex.conn_values.append(value)
        elif kind == h.REQ_REQUEST_ID:
            ex.request_id = value
            ex.headers += (name, b": ", value, b"\r\n")
        elif kind == h.REQ_FORWARDED_FOR:
            if self.trusted:
                ex.forwarded_for = (
                    value if ex.forwarded_for is None else ex.forwarded_for + b", " + value
                )
        elif kind == h.REQ_FORWARDED_PROTO:
            if self.trusted:
                ex.forwarded_proto = value
        elif kind == h.REQ_FORWARDED_HOST:
            if self.trusted:
                ex.forwarded_host = value
        elif kind == h.REQ_TRANSFER_ENCODING:
            ex.te = value
        elif kind == h.REQ_UPGRADE:
            ex.upgrade = value
        elif kind == h.REQ_TE:
            ex.te_trailers = b"trailers" in value.lower()
        elif kind == h.REQ_EXPECT:
            ex.expect_continue = value.lower() == b"100-continue"
            ex.headers += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        ex = self._ex
        assert ex is not None
        parser = self._parser
        ex.parsed = True
        ex.method = method = parser.get_method()
        ex.head_request = method == b"HEAD"
        ex.keep_alive = keep_alive = parser.should_keep_alive()
        # An HTTP/1.0 request keeps the connection only when it asks to, so a keep-alive request
        # that did not ask is HTTP/1.1 without formatting the version string.
        if (not keep_alive or ex.asked_keep_alive) and parser.get_http_version() != "1.1":
            ex.http11 = False
        if ex.te is not None:
            ex.body = BODY_CHUNKED
            if ex.te.strip().lower() != b"chunked":
                ex.bad = "bad_request"  # other codings cannot be re-framed faithfully
        elif ex.content_length > 0:
            ex.body = BODY_LENGTH
        if ex.upgrade is not None and not parser.should_upgrade():
            ex.upgrade = None  # Upgrade without `Connection: upgrade` is only a hop-by-hop header
        if (ex.host is None and ex.http11) or method == b"CONNECT":
            ex.bad = "bad_request"
        elif 0 < self._max_body < ex.content_length and ex.bad is None:
            ex.bad = "body_too_large"  # known up front: refused before any byte is forwarded
        if ex.bad is not None:
            ex.keep_alive = False
            ex.request_done = True
        if not ex.keep_alive:
            self._broken = True
            self._stop_reading()
        if self._active is None:
            self._active = ex
            ex.start()
        elif not self.closing:
            if self._queue is None:
                self._queue = deque()
            self._queue.append(ex)
            self.pause(PAUSE_PIPELINE)
        if ex.bad is not None:
            raise _StopParsing

    def on_body(self, chunk: bytes) -> None:
        ex = self._ex
        assert ex is not None
        if self._max_body:
            self._body_bytes += len(chunk)
            if self._body_bytes > self._max_body:
                # A chunked body grew past the cap: the upstream never sees it complete.
                self._refuse("body_too_large")
                raise _StopParsing
        ex.body_chunk(chunk)

    def on_message_complete(self) -> None:
        ex = self._ex
        assert ex is not None
        self._ex = None
        ex.body_end()
        if ex.finished and ex is self._active and not self.closing:
            self._advance()

    # -- called by exchanges -------------------------------------------------------------------

    def routing_host(self, raw: bytes | None) -> str:
        if raw is None:
            return ""
        if raw != self._host_raw:
            self._host_str = h.host_of(raw)
            self._host_raw = raw
        return self._host_str

    def exchange_done(self, ex: Exchange) -> None:
        """`ex` has handed its whole response to the transport: count it, then move on."""
        ctx = self.ctx
        status = ex.status
        ctx.counters.responses[status // 100 if 100 <= status < 600 else 0] += 1
        if ctx.observer is not None:
            ctx.observer.exchange_done(ex)
        if ex is not self._active or self.closing:
            return
        if ex.close_after or ctx.draining or ex.upgrade is not None:
            if ex.bad is not None or not ex.request_done:
                linger(self)  # the client may still be sending
            else:
                self.close()
            return
        if not ex.request_done:
            if ex.body == BODY_CHUNKED or ex.content_length > DISCARD_BODY_BYTES:
                linger(self)  # not worth reading a long request body nobody will use
            # else the rest of the request is read and dropped; on_message_complete moves on
            return
        self._advance()

    def _advance(self) -> None:
        queue = self._queue
        nxt = queue.popleft() if queue else None
        self._active = nxt
        if self._paused & (PAUSE_UPSTREAM | PAUSE_PIPELINE):
            # The finished exchange's upstream can no longer say it drained.
            self.resume(PAUSE_UPSTREAM if queue else PAUSE_UPSTREAM | PAUSE_PIPELINE)
        if nxt is not None:
            nxt.start()
        elif self._eof:
            self.close()

    def start_splice(self, ex: Exchange) -> None:
        """After a 101: relay raw bytes both ways (held client bytes first) until either closes."""
        self._splice = ex
        held, self._held = self._held, None
        up = ex.up
        if held and up is not None:
            up.transport.write(b"".join(held))
        self._paused &= ~PAUSE_DONE
        if not self._paused:
            self.transport.resume_reading()

    def pause(self, reason: int) -> None:
        if not self._paused and not self.closing:
            self.transport.pause_reading()
        self._paused |= reason

    def resume(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and not self.closing:
                self.transport.resume_reading()

    def _stop_reading(self) -> None:
        self.pause(PAUSE_DONE)

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.transport.close()  # flushes what is buffered first
        elif self._linger_until:
            self._linger_until = 0.0
            self.transport.close()

    def _too_large(self) -> None:
        self._refuse("headers_too_large")
        raise _StopParsing

    def _refuse(self, reason: str) -> None:
        """The request cannot be read on: answer it in its turn, read nothing more."""
        self._broken = True
        self._stop_reading()
        ex = self._ex
        self._ex = None
        if ex is not None and ex.parsed:
            # Broken inside a body that is already streaming upstream: the upstream must never
            # see the message complete, so its connection is dropped with the request.
            ex.bad = reason
            ex.keep_alive = False
            if ex is self._active:
                reply(ex, REASONS[reason], reason)
            return
        bad = Exchange(self)
        bad.bad = reason
        bad.keep_alive = False
        bad.request_done = True
        if self._active is None:
            self._active = bad
            bad.start()
        elif self._queue is not None:
            self._queue.append(bad)
        else:
            self._queue = deque((bad,))
