"""RequestMirror: fire-and-forget copies of requests to a mirror backend. I/O through the pools.

A copy never delays or fails the real request: it is sent on its own upstream connection, its
response is read and dropped, and its failures are only counted.

Bounded by choice:
* a request without a body is copied at once, with the same head the real upstream gets (same
  Host, path, modifiers and X-Forwarded-* headers);
* a request body is copied only up to `GatewaySettings.mirror_max_body_bytes` (64 KiB by
  default): a Content-Length above the cap is not mirrored at all; a chunked body is collected as
  it streams and the copy is dropped as soon as it grows past the cap. The copy goes out once the
  whole request has arrived, so memory per request stays under the cap;
* at most `mirror_max_inflight` copies are in flight per gateway; more are dropped and counted,
  so a slow mirror backend cannot grow memory without bound;
* upgrade (WebSocket) requests are never mirrored.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from gateway import upstreams
from gateway.context import ProxyContext
from gateway.errors import UpstreamConnectError
from gateway.exchange import Exchange
from gateway.headers import BODY_NONE
from policies.matching import Forward
from policies.model import HeaderModifier
from policies.table import Endpoint

if TYPE_CHECKING:
    from gateway.upstream_connection import UpstreamConnection
    from gateway.upstreams import EndpointPool


class MirrorCopy:
    """One copy of a request on its way to a mirror endpoint (a `Requester` that discards)."""

    __slots__ = (
        "close_after",
        "deadline",
        "finished",
        "mirrors",
        "pool",
        "request",
        "responding",
        "status",
        "up",
    )

    discard = True
    http11 = True
    head_request = False
    upgrade: bytes | None = None
    keep_alive = True
    request_done = True
    response_modifiers: tuple[HeaderModifier, ...] = ()

    def __init__(self, mirrors: Mirrors, request: bytes, deadline: float) -> None:
        self.mirrors = mirrors
        self.request = request  # head and body, exactly as the real upstream got them
        self.deadline = deadline
        self.close_after = False
        self.finished = False
        self.responding = False
        self.status = 0
        self.pool: EndpointPool | None = None
        self.up: UpstreamConnection | None = None

    def bind(self, conn: UpstreamConnection, *, reused: bool) -> None:
        self.up = conn
        conn.exchange = self
        conn.received = False
        conn.uses += 1
        conn.transport.write(self.request)

    def connect_failed(self, error: UpstreamConnectError) -> None:
        self.end(failed=True)

    def deliver(self, data: bytes) -> None:
        pass

    def response_complete(self) -> None:
        self.up = None
        self.end(failed=False)

    def upstream_lost(self, conn: UpstreamConnection) -> None:
        self.up = None
        self.end(failed=True)

    def protocol_error(self) -> None:
        self.end(failed=True)

    def upgraded(self) -> None:
        self.end(failed=True)

    def upstream_paused(self) -> None:
        pass  # the copy is at most mirror_max_body_bytes: nothing to hold back

    def upstream_resumed(self) -> None:
        pass

    def end(self, *, failed: bool) -> None:
        if self.finished:
            return
        self.finished = True
        upstreams.let_go(self)
        self.mirrors.ended(self, failed=failed)


class Mirrors:
    """Every mirror copy in flight in one gateway."""

    __slots__ = ("ctx", "inflight")

    def __init__(self, ctx: ProxyContext) -> None:
        self.ctx = ctx
        self.inflight: set[MirrorCopy] = set()

    def consider(self, ex: Exchange, fwd: Forward) -> None:
        """Roll each of the decision's mirrors; send or arrange the copies that win."""
        ctx = self.ctx
        targets: list[Endpoint] = []
        for mirror in fwd.mirrors:
            if random.random() * 100.0 >= mirror.percent:
                continue
            endpoint = ctx.router.pick(mirror.backend, fwd.settings)
            if endpoint is None:
                ctx.counters.mirror_dropped += 1
                continue
            targets.append(endpoint)
        if not targets:
            return
        if ex.body == BODY_NONE:
            for endpoint in targets:
                self.send(endpoint, ex.up_head, fwd)
            return
        if ex.content_length > ctx.settings.mirror_max_body_bytes:
            ctx.counters.mirror_dropped += len(targets)
            return
        ex.mirror_targets = targets
        ex.mirror_body = list(ex.pending or ())
        if ex.request_done:  # a pipelined request whose body arrived while it waited its turn
            self.send_buffered(ex)

    def copy_body(self, ex: Exchange, data: bytes) -> None:
        body = ex.mirror_body
        assert body is not None
        body.append(data)
        if sum(map(len, body)) > self.ctx.settings.mirror_max_body_bytes:
            self.ctx.counters.mirror_dropped += len(ex.mirror_targets or ())
            ex.mirror_body = None
            ex.mirror_targets = None

    def send_buffered(self, ex: Exchange) -> None:
        targets, body = ex.mirror_targets, ex.mirror_body
        ex.mirror_targets = ex.mirror_body = None
        if targets is None or body is None or ex.forward is None:
            return
        request = ex.up_head + b"".join(body)
        for endpoint in targets:
            self.send(endpoint, request, ex.forward)

    def send(self, endpoint: Endpoint, request: bytes, fwd: Forward) -> None:
        ctx = self.ctx
        if len(self.inflight) >= ctx.settings.mirror_max_inflight:
            ctx.counters.mirror_dropped += 1
            return
        copy = MirrorCopy(self, request, ctx.now + ctx.settings.mirror_timeout_s)
        self.inflight.add(copy)
        ctx.counters.mirror_sent += 1
        ctx.pools.send(copy, endpoint, fwd.settings.timeouts.connect_s)

    def ended(self, copy: MirrorCopy, *, failed: bool) -> None:
        self.inflight.discard(copy)
        if failed:
            self.ctx.counters.mirror_failed += 1

    def check(self, now: float) -> None:
        """Give up on copies past their deadline (called by the gateway's tick)."""
        for copy in [c for c in self.inflight if c.deadline <= now]:
            copy.end(failed=True)

    def close(self) -> None:
        for copy in list(self.inflight):
            copy.end(failed=True)
