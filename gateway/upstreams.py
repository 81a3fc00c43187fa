"""Upstream side of the proxy: one `asyncio.Protocol` per connection, LIFO pools per endpoint.

I/O: TCP connections to endpoints (loop.create_connection), TLS for member clusters that
configure it (contexts from gateway.tls). An `UpstreamConnection` parses
responses with httptools and translates them for the client as they arrive: hop-by-hop headers
out, bodies re-framed (Content-Length passed through; chunked or read-until-close bodies
re-chunked for HTTP/1.1 clients), interim 1xx relayed, a 101 turned into a raw byte splice.
Bytes produced by one `data_received` are handed to the requester in one write.

Pools: idle keep-alive connections per endpoint address, reused last-in-first-out (the warmest
connection, the least likely to have been closed by the upstream), closed after
`GatewaySettings.upstream_idle_s` by the periodic sweep and when taken too late. New connections
are opened on demand by a task in the gateway's task group; a pool hit costs no task, no
coroutine and no timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from gateway import headers as h
from gateway import tls
from gateway.context import ProxyContext
from gateway.errors import UpstreamConnectError
from policies.model import HeaderModifier
from policies.table import Endpoint, RoutingTable

if TYPE_CHECKING:
    from gateway.exchange import Exchange  # the one requester that does not discard

log = logging.getLogger(__name__)

_KINDS = h.RESPONSE_KINDS
_SPECIAL = h.RESPONSE_SPECIAL

Spawn = Callable[[Coroutine[Any, Any, None]], object]


class Requester(Protocol):
    """What an upstream connection serves: a client's exchange, or a mirror copy."""

    discard: bool  # the response is read and dropped (mirrors)
    http11: bool  # the client speaks HTTP/1.1 (may get chunked bodies and 1xx)
    head_request: bool  # HEAD: the response has no body whatever its headers say
    upgrade: bytes | None  # the Upgrade value of a real upgrade request
    keep_alive: bool
    close_after: bool
    request_done: bool  # every request byte has been handed to the upstream transport
    response_modifiers: tuple[HeaderModifier, ...]
    status: int
    responding: bool
    finished: bool
    deadline: float
    pool: EndpointPool | None
    up: UpstreamConnection | None

    def bind(self, conn: UpstreamConnection, *, reused: bool) -> None: ...
    def connect_failed(self, error: UpstreamConnectError) -> None: ...
    def deliver(self, data: bytes) -> None: ...
    def response_complete(self) -> None: ...
    def upstream_lost(self, conn: UpstreamConnection) -> None: ...
    def protocol_error(self) -> None: ...
    def upgraded(self) -> None: ...
    def upstream_paused(self) -> None: ...
    def upstream_resumed(self) -> None: ...


def let_go(req: Requester) -> None:
    """`req` gives up its upstream mid-exchange (a client gone, a retry, a mirror ended): the
    connection it holds is detached, never reused, and the in-flight slot `Pools.send` counted
    for least-request balancing is returned."""
    up = req.up
    if up is not None:
        req.up = None
        up.detach()
    pool = req.pool
    if pool is not None:
        req.pool = None
        pool.active -= 1


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


class EndpointPool:
    """Idle connections to one endpoint address, most recently used last."""

    __slots__ = ("active", "address", "cluster", "ctx", "host", "idle", "port", "retired")

    def __init__(self, ctx: ProxyContext, endpoint: Endpoint) -> None:
        self.ctx = ctx
        self.host = endpoint.host
        self.port = endpoint.port
        self.cluster = endpoint.cluster
        self.address = endpoint.address
        self.idle: list[UpstreamConnection] = []
        self.active = 0  # requests in flight to this endpoint (least-request balancing)
        self.retired = False  # its cluster's upstream TLS changed: connections are not reused

    def take(self) -> UpstreamConnection | None:
        idle = self.idle
        limit = self.ctx.now - self.ctx.settings.upstream_idle_s
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            if conn.idle_since < limit or conn.transport.is_closing():
                conn.transport.close()
                continue
            return conn
        return None

    def release(self, conn: UpstreamConnection) -> None:
        if conn.read_paused:
            conn.read_paused = False
            conn.transport.resume_reading()  # an idle connection must notice the upstream's FIN
        if self.retired or len(self.idle) >= self.ctx.settings.max_idle_per_endpoint:
            conn.transport.close()
            return
        conn.idle_since = self.ctx.now
        self.idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)

    def sweep(self, limit: float) -> None:
        """Close idle connections unused since before `limit` (the oldest sit at the front)."""
        idle = self.idle
        stale = 0
        while stale < len(idle) and idle[stale].idle_since < limit:
            stale += 1
        if stale:
            for conn in idle[:stale]:
                conn.transport.close()
            del idle[:stale]


class Pools:
    """Every endpoint pool of one gateway, keyed by address."""

    __slots__ = ("_pools", "_spawn", "ctx", "tls")

    def __init__(self, ctx: ProxyContext, spawn: Spawn) -> None:
        self.ctx = ctx
        self._spawn = spawn
        self._pools: dict[tuple[str, int], EndpointPool] = {}
        self.tls = tls.UpstreamContexts()

    def follow(self, table: RoutingTable) -> None:
        """Take the upstream TLS settings of a new live table. Pools of clusters whose settings
        changed are retired: their connections (plain or TLS under the old settings) close
        instead of being reused, and new ones open under the new settings."""
        changed = self.tls.follow(table)
        if not changed:
            return
        for key, pool in list(self._pools.items()):
            if pool.cluster in changed:
                pool.retired = True
                for conn in pool.idle:
                    conn.transport.close()
                pool.idle.clear()
                del self._pools[key]

    def pool_for(self, endpoint: Endpoint) -> EndpointPool:
        key = (endpoint.host, endpoint.port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = EndpointPool(self.ctx, endpoint)
        return pool

    def active(self, endpoint: Endpoint) -> int:
        """Requests in flight to `endpoint` (what least-request balancing compares)."""
        pool = self._pools.get((endpoint.host, endpoint.port))
        return 0 if pool is None else pool.active

    def send(
        self, req: Requester, endpoint: Endpoint, connect_s: float, *, fresh: bool = False
    ) -> None:
        """Bind `req` to a pooled connection now, or to a new one when it connects.

        `fresh` skips the idle connections (a retry after a reused connection turned out dead).
        """
        pool = self.pool_for(endpoint)
        if req.pool is None:
            req.pool = pool
            pool.active += 1
        if not fresh:
            conn = pool.take()
            if conn is not None:
                self.ctx.counters.upstream_pool_hits += 1
                req.bind(conn, reused=True)
                return
        self._spawn(self._connect(pool, req, connect_s))

    async def _connect(self, pool: EndpointPool, req: Requester, connect_s: float) -> None:
        loop = asyncio.get_running_loop()
        counters = self.ctx.counters
        try:
            async with asyncio.timeout(connect_s if connect_s > 0 else None):
                secure = self.tls.for_cluster(pool.cluster, pool.host)
                if secure is None:
                    _, conn = await loop.create_connection(
                        lambda: UpstreamConnection(pool), pool.host, pool.port
                    )
                else:  # the handshake (and verification) is part of connecting
                    _, conn = await loop.create_connection(
                        lambda: UpstreamConnection(pool),
                        pool.host,
                        pool.port,
                        ssl=secure[0],
                        server_hostname=secure[1],
                    )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # task top level: every failure becomes the requester's reply
            counters.upstream_connect_failed += 1
            if not isinstance(exc, OSError | TimeoutError):
                log.exception("unexpected connect failure address=%s", pool.address)
            req.connect_failed(UpstreamConnectError(pool.cluster, pool.address, exc))
            return
        counters.upstream_connects += 1
        if req.finished:
            pool.release(conn)  # the client went away meanwhile: keep the connection warm
        else:
            req.bind(conn, reused=False)

    def sweep(self, now: float) -> None:
        limit = now - self.ctx.settings.upstream_idle_s
        for pool in self._pools.values():
            if pool.idle:
                pool.sweep(limit)

    def idle_count(self) -> int:
        return sum(len(pool.idle) for pool in self._pools.values())

    def close(self) -> None:
        """Close every idle connection, and retire the pools so that a connection released later
        (a request or health check still finishing while the gateway closes) is closed, not kept
        idle in a pool nobody will sweep again."""
        for pool in self._pools.values():
            pool.retired = True
            for conn in pool.idle:
                conn.transport.close()
            pool.idle.clear()
