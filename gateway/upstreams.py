"""How requesters get upstream connections and give them back: LIFO pools per endpoint
(`EndpointPool`, `Pools`), `Pools.send` and `let_go`. I/O: TCP connections to endpoints
(loop.create_connection), TLS for member clusters that configure it (contexts from gateway.tls).

Pools: idle keep-alive connections per endpoint address, reused last-in-first-out (the warmest
connection, the least likely to have been closed by the upstream), closed after
`GatewaySettings.upstream_idle_s` by the periodic sweep and when taken too late. New connections
are opened on demand by a task in the gateway's task group; a pool hit costs no task, no
coroutine and no timer. A failed connect becomes `UpstreamConnectError` here, the one place
connect errors are translated (STYLE §3.5).

Its own module because this is bookkeeping across connections, run once per request, per connect
or per sweep rather than per byte: which connection a requester gets, how many requests are in
flight per endpoint (least-request balancing), when idle ones close, and which pools a TLS
change retires. The HTTP/1.1 protocol of one connection is `gateway.upstream_connection`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from gateway import tls
from gateway.context import ProxyContext
from gateway.errors import UpstreamConnectError
from gateway.upstream_connection import UpstreamConnection
from policies.model import HeaderModifier
from policies.table import Endpoint, RoutingTable

log = logging.getLogger(__name__)

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
