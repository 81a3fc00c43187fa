"""One upstream connection: an `asyncio.Protocol` that parses an endpoint's HTTP/1.1 responses and
relays them to the requester it is bound to. I/O: the upstream socket (through its transport).

Responses are parsed with httptools and translated for the client as they arrive: hop-by-hop
headers out, bodies re-framed (Content-Length passed through; chunked or read-until-close bodies
re-chunked for HTTP/1.1 clients), interim 1xx relayed, a 101 turned into a raw byte splice.
Bytes produced by one `data_received` are handed to the requester in one write. A complete
response on a connection that can be reused goes back to its pool (`EndpointPool.release`);
anything that leaves framing in doubt closes it.

Its own module because it is the per-byte protocol, the upstream counterpart of
`gateway.downstream`, while `gateway.upstreams` keeps the bookkeeping across connections (which
one a requester gets, in-flight counts per endpoint, idle expiry, opening new ones). The pools
touch a connection only through `closed`, `idle_since`, `read_paused` and `transport`; the
connection reaches its pool for the context, its address for health reports, and `release` and
`forget`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from gateway import headers as h

if TYPE_CHECKING:
    from gateway.exchange import Exchange  # the one requester that does not discard
    from gateway.upstreams import EndpointPool, Requester

_KINDS = h.RESPONSE_KINDS
_SPECIAL = h.RESPONSE_SPECIAL


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_chunked",
        "_cl",
        "_conn_values",
        "_done",
        "_garbage",
        "_head_only",
        "_headers",
        "_interim",
        "_keep_alive",
        "_out",
        "_parser",
        "_phrase",
        "_rechunk",
        "_spliced",
        "_until_close",
        "_upgrade",
        "closed",
        "ctx",
        "exchange",
        "idle_since",
        "last_seen",
        "pool",
        "read_paused",
        "received",
        "transport",
        "uses",
    )

    def __init__(self, pool: EndpointPool) -> None:
        self.pool = pool
        self.ctx = pool.ctx
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set on connect
        self.exchange: Requester | None = None
        self.closed = False
        self.idle_since = 0.0
        self.last_seen = 0.0
        self.read_paused = False
        self.received = False  # any byte from the upstream for the current exchange
        self.uses = 0  # exchanges bound so far; above 1 the connection came from the pool
        self._parser = HttpResponseParser(self)
        self._out: list[bytes] = []
        self._spliced = False
        self._done = False
        self._garbage = False
        self._head_only = False
        self._interim = False
        self._rechunk = False
        self._until_close = False
        self._keep_alive = True
        self._phrase = b""
        self._headers: list[bytes] = []  # flat, see gateway.headers
        self._conn_values: list[bytes] | None = None
        self._upgrade: bytes | None = None
        self._cl = False
        self._chunked = False
        self._body = False

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike
        self.transport = transport = cast(asyncio.Transport, transport)
        settings = self.ctx.settings
        transport.set_write_buffer_limits(settings.write_high_bytes, settings.write_low_bytes)
        self.ctx.counters.upstream_open += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.ctx.counters.upstream_open -= 1
        ex = self.exchange
        if ex is None:
            self.pool.forget(self)
            return
        self.exchange = None
        if self._spliced:
            ex.upstream_lost(self)
        elif self._until_close and ex.responding and not self._done:
            # A body delimited by the close of the connection ends here (RFC 9112 §6.3 item 8).
            if self._rechunk:
                ex.deliver(b"0\r\n\r\n")
            ex.response_complete()
        else:
            ex.upstream_lost(self)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_paused()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_resumed()

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None:
            # Bytes on an idle connection: the upstream broke framing. Never reuse it.
            self.transport.close()
            return
        self.received = True
        self.last_seen = self.ctx.now
        if self._spliced:
            ex.deliver(data)
            return
        out = self._out
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade as upgrade:
            if ex.upgrade is None or ex.status != 101:
                out.clear()
                ex.protocol_error()
                return
            self._spliced = True
            self._done = False
            tail = data[upgrade.args[0] :]
            if tail:
                out.append(tail)
            ex.deliver(b"".join(out))
            out.clear()
            ex.upgraded()
            return
        except HttpParserError:
            out.clear()
            ex.protocol_error()
            return
        if out:
            ex.deliver(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
        if self._done:
            self._finish(ex)

    def _finish(self, ex: Requester) -> None:
        self.exchange = None
        self._done = False
        self._rechunk = False
        if self._head_only:
            # The parser still expects the body that the HEAD response's headers announced.
            self._parser = HttpResponseParser(self)
            self._head_only = False
        reusable = self._keep_alive and not self._garbage and ex.request_done and not self.closed
        if reusable:
            self.pool.release(self)
        else:
            self.transport.close()
        ex.response_complete()

    def detach(self) -> None:
        """The requester gives up on this connection mid-exchange: it cannot be reused."""
        self.exchange = None
        self.transport.close()

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._phrase = b""
        self._headers = []
        self._conn_values = None
        self._upgrade = None
        self._cl = False
        self._chunked = False
        self._body = False

    def on_status(self, phrase: bytes) -> None:
        self._phrase += phrase

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._body:
            return  # trailer fields of a chunked body: dropped, as Envoy does by default
        kind = _KINDS.get(name)
        if kind is None:
            kind = _SPECIAL.get(name.lower(), 0)
        if kind == 0:
            self._headers += (name, b": ", value, b"\r\n")
        elif kind == h.RESP_CONTENT_LENGTH:
            self._cl = True
            self._headers += (name, b": ", value, b"\r\n")
        elif kind == h.RESP_TRANSFER_ENCODING:
            self._chunked = True  # the parser refuses anything but a final `chunked`
        elif kind == h.RESP_CONNECTION:
            if value.lower() in h.PLAIN_CONNECTION:
                pass  # keep-alive / close: the parser already knows
            elif self._conn_values is None:
                self._conn_values = [value]
            else:
                self._conn_values.append(value)
        elif kind == h.RESP_UPGRADE:
            self._upgrade = value
        elif kind == h.RESP_HEALTH_FAIL:
            monitor = self.ctx.health
            if monitor is not None:
                pool = self.pool
                monitor.immediate_fail(f"{pool.address}@{pool.cluster}")  # Endpoint.id

    def on_headers_complete(self) -> None:
        self._body = True
        ex = self.exchange
        assert ex is not None
        status: int = self._parser.get_status_code()
        if status < 200 and status != 101:
            # Interim response (100 Continue, 103 Early Hints): relay it to an HTTP/1.1 client
            # (RFC 9110 §15.2 forbids sending 1xx to HTTP/1.0) and wait for the final one.
            self._interim = True
            if ex.http11 and not ex.discard:
                self._out.append(self._head(ex, status, b""))
            return
        ex.status = status
        if status >= 400 and not ex.discard and cast("Exchange", ex).retry_status(status):
            ex.discard = True  # read and dropped; the exchange retries once it is complete
        ex.responding = True
        self._keep_alive = self._parser.should_keep_alive()
        no_body = ex.head_request or status == 204 or status == 304
        self._until_close = not (no_body or self._cl or self._chunked or status == 101)
        self._head_only = ex.head_request
        if ex.discard:
            self._done = self._head_only
            return
        if status == 101:
            extra = b"connection: upgrade\r\nupgrade: " + (self._upgrade or b"") + b"\r\n"
        else:
            close = not ex.keep_alive or ex.close_after or self.ctx.draining
            if not (no_body or self._cl) and not ex.http11:
                close = True  # HTTP/1.0 client: the body ends when we close
            elif not (no_body or self._cl):
                self._rechunk = True
            ex.close_after = close
            if close:
                extra = b"connection: close\r\n"
            elif not ex.http11:
                extra = b"connection: keep-alive\r\n"
            else:
                extra = b""
            if self._rechunk:
                extra += b"transfer-encoding: chunked\r\n"
        self._out.append(self._head(ex, status, extra))
        if self._head_only:
            self._done = True

    def _head(self, ex: Requester, status: int, extra: bytes) -> bytes:
        headers = self._headers
        if self._conn_values is not None:
            named = h.named_by_connection(h.connection_tokens(self._conn_values))
            if named:
                headers = h.drop_named(headers, named)
        if ex.response_modifiers and status >= 200:
            headers = h.apply_modifiers(headers, ex.response_modifiers)
        parts = [h.status_line(status, self._phrase)]
        parts += headers
        parts += (extra, b"\r\n")
        return b"".join(parts)

    def on_body(self, chunk: bytes) -> None:
        if self._head_only:
            self._garbage = True  # a body after a HEAD response: framing is lost
        elif self._rechunk:
            self._out += (b"%x\r\n" % len(chunk), chunk, b"\r\n")
        elif not self.exchange.discard:  # type: ignore[union-attr]  # set while parsing
            self._out.append(chunk)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self._head_only:
            return  # already done at the end of the headers
        if self._rechunk:
            self._out.append(b"0\r\n\r\n")
        self._done = True
