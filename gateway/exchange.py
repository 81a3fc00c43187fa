"""One request and its response on a client connection: route, forward, relay, reply. No I/O of
its own: it writes through the two protocols' transports.

Life of an exchange: the downstream protocol creates it when a request starts and fills in the
request head; once it is first in line on its connection (`start`), it is decided against the
live table, bound to an upstream connection and its body streamed; the upstream connection
relays the response through `deliver` and ends it with `response_complete`. Any failure ends
it with exactly one local reply (`gateway.replies.reply`), or, once response bytes have gone to
the client, by closing the client connection (the only honest signal left). Upstream failures
(connect, loss, protocol error, timeout) are handled in `gateway.upstream_failures`.

Request bodies are written to the upstream as they arrive (re-chunked when the client sent them
chunked). Before an upstream connection exists, body bytes wait in `pending` and the client
connection stops reading, so at most one read's worth is buffered.
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING

from httptools import HttpParserInvalidURLError, parse_url

from gateway import affinity, retrying, upstreams
from gateway import headers as h
from gateway.errors import REASONS, UpstreamConnectError
from gateway.headers import BODY_CHUNKED, BODY_NONE
from gateway.replies import redirect, reply
from gateway.routing import HeaderView
from gateway.upstream_failures import (
    handle_connect_failure,
    handle_protocol_error,
    handle_upstream_loss,
)
from policies.matching import Decision, Forward, Redirect, RequestHead
from policies.model import HeaderModifier
from policies.table import Endpoint

if TYPE_CHECKING:
    from gateway.downstream import DownstreamProtocol
    from gateway.upstream_connection import UpstreamConnection
    from gateway.upstreams import EndpointPool

INF = float("inf")

# Reasons the client connection stops reading (bit flags, see DownstreamProtocol.pause).
PAUSE_BODY = 1  # body bytes wait for an upstream connection
PAUSE_UPSTREAM = 2  # the upstream's write buffer is above its high-water mark
PAUSE_PIPELINE = 4  # a later request waits behind the one being answered
PAUSE_DONE = 8  # no more requests will be read on this connection

# A request body still to come is read and dropped after a local reply if it is at most this
# long; a longer or chunked one makes the reply say `Connection: close` instead.
DISCARD_BODY_BYTES = 64 * 1024
_METHODS = {m: m.decode() for m in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH")}


class Exchange:
    __slots__ = (
        "asked_keep_alive",
        "bad",
        "body",
        "close_after",
        "conn_values",
        "content_length",
        "deadline",
        "decided",
        "discard",
        "down",
        "endpoint",
        "expect_continue",
        "finished",
        "forward",
        "forwarded_for",
        "forwarded_host",
        "forwarded_proto",
        "head_request",
        "headers",
        "host",
        "http11",
        "idle_s",
        "keep_alive",
        "method",
        "mirror_body",
        "mirror_targets",
        "overall",
        "parsed",
        "pending",
        "pool",
        "reason",
        "replay",
        "replay_bytes",
        "request_done",
        "request_id",
        "responding",
        "response_modifiers",
        "retried",
        "sent",
        "sent_bytes",
        "started",
        "status",
        "status_retry",
        "target",
        "te",
        "te_trailers",
        "tried",
        "tries",
        "up",
        "up_head",
        "upgrade",
    )

    def __init__(self, down: DownstreamProtocol) -> None:
        self.down = down
        self.started = perf_counter()  # for the latency histogram and the access log
        # request, filled in by the downstream parser
        self.method = b""
        self.target = b""  # raw request-target, byte for byte
        self.headers: list[bytes] = []  # end-to-end headers, flat (gateway.headers), as received
        self.host: bytes | None = None
        self.asked_keep_alive = False  # a Connection header said keep-alive (HTTP/1.0 style)
        self.conn_values: list[bytes] | None = None
        self.te: bytes | None = None
        self.te_trailers = False
        self.expect_continue = False
        self.upgrade: bytes | None = None
        self.forwarded_for: bytes | None = None  # X-Forwarded-* sent by a trusted proxy only
        self.forwarded_proto: bytes | None = None
        self.forwarded_host: bytes | None = None
        self.request_id: bytes | None = None
        self.content_length = -1
        self.body = BODY_NONE
        self.http11 = True
        self.keep_alive = True
        self.head_request = False
        self.parsed = False  # request head complete (later header callbacks are trailers)
        self.request_done = False  # whole request received (and handed on, if forwarding)
        self.bad: str | None = None  # refused at parse time: replied with 400 in its turn
        self.pending: list[bytes] | None = None
        # decision and upstream
        self.decided: Decision | None = None  # what the table said (metrics: route and rule)
        self.forward: Forward | None = None
        self.endpoint: Endpoint | None = None
        self.pool: EndpointPool | None = None
        self.up: UpstreamConnection | None = None
        self.up_head = b""
        self.retried = False
        # retries (gateway.retrying)
        self.tries = 0  # upstream attempts started; 0 once settled (or never forwarded)
        self.tried: list[Endpoint] = []
        self.overall = INF  # the rule's request timeout, retries included
        self.replay: list[bytes] | None = None  # request body bytes kept for a retry
        self.replay_bytes = 0
        self.status_retry = False  # the upstream's answer is being dropped for a retry
        self.deadline = INF
        self.idle_s = INF
        self.mirror_targets: list[Endpoint] | None = None
        self.mirror_body: list[bytes] | None = None
        # response
        self.discard = False
        self.response_modifiers: tuple[HeaderModifier, ...] = ()
        self.status = 0
        self.responding = False  # the final response head has been parsed
        self.sent = False  # final response bytes have gone to the client
        self.sent_bytes = 0  # bytes handed to the client's transport (head and body)
        self.close_after = False
        self.finished = False
        self.reason: str | None = None  # local reply reason, if any

    # -- routing -------------------------------------------------------------------------------

    def start(self) -> None:
        """Decide this exchange (now first in line on its connection) and act on the decision."""
        if self.bad is not None:
            reply(self, REASONS.get(self.bad, 400), self.bad)
            return
        down = self.down
        target = self.target
        if target[:1] == b"/":
            q = target.find(b"?")
            path, query = (target, b"") if q < 0 else (target[:q], target[q + 1 :])
        elif target[:7].lower() == b"http://" or target[:8].lower() == b"https://":
            # absolute-form (RFC 9112 §3.2.2): its authority replaces the Host header
            try:
                url = parse_url(target)
            except HttpParserInvalidURLError:
                url = None
            if url is None or not url.host:
                reply(self, 400, "bad_request")
                return
            path, query = url.path or b"/", url.query or b""
            self.host = url.host + (b":%d" % url.port if url.port else b"")
            self.target = path + b"?" + query if query else path
        else:
            path, query = target, b""  # asterisk-form (OPTIONS *)
        host = down.routing_host(self.host)
        text_path = path.decode("latin-1")
        router = down.ctx.router
        # Most requests are settled by host and path (memoized): no RequestHead and header view
        # to build.
        decision = router.decide_path(host, text_path)
        head = None
        if decision is None:
            head = self._head(host, text_path, query)
            decision = router.decide(head)
        self.decided = decision
        if isinstance(decision, Forward):
            self._forward(decision, head, text_path, query)
        elif isinstance(decision, Redirect):
            redirect(self, decision)
        else:
            reply(self, decision.status, decision.reason)

    def _head(self, host: str, path: str, query: bytes) -> RequestHead:
        """The request as `policies.matching` sees it."""
        listener = self.down.listener
        return RequestHead(
            _METHODS.get(self.method) or self.method.decode("latin-1"),
            host,
            path,
            query.decode("latin-1"),
            HeaderView(self.headers, self.host),
            listener.scheme,
            listener.port,
        )

    def _forward(self, fwd: Forward, head: RequestHead | None, path: str, query: bytes) -> None:
        ctx = self.down.ctx
        key: str | None = None
        minted: HeaderModifier | None = None
        if fwd.settings.affinity is not None:
            if head is None:
                head = self._head(self.down.routing_host(self.host), path, query)
            fwd, key, minted = affinity.stick(fwd, head)  # sticky backend, cluster, endpoint
        endpoint = ctx.router.pick(fwd.backend, fwd.settings, key)
        if endpoint is None:
            reply(self, 503, "no_healthy_backend")
            return
        if not ctx.limits.admit(self, fwd, ctx.now):
            return  # replied 429 rate_limited or 503 circuit_open
        self.forward = fwd
        self.endpoint = endpoint
        self.tried.append(endpoint)
        timeouts = fwd.settings.timeouts
        retrying.begin(self, fwd.settings, ctx.now)  # per-try and overall deadlines
        if timeouts.idle_s > 0:
            self.idle_s = timeouts.idle_s
        self.response_modifiers = fwd.response_headers
        if minted is not None:
            self.response_modifiers += (minted,)  # the new client's affinity cookie
        if fwd.path is not None and fwd.path != path:  # a URLRewrite's
            target = fwd.path.encode("latin-1")
            self.target = target + b"?" + query if query else target
        self.up_head = self._upstream_head(fwd, endpoint)
        if fwd.mirrors and self.upgrade is None:
            ctx.mirrors.consider(self, fwd)
        ctx.pools.send(self, endpoint, timeouts.connect_s)

    def _upstream_head(self, fwd: Forward, endpoint: Endpoint) -> bytes:
        down = self.down
        host = fwd.host.encode("latin-1") if fwd.host is not None else self.host
        if host is None:
            host = endpoint.address.encode()  # HTTP/1.0 without Host; HTTP/1.1 requires one
        parts = [self.method, b" ", self.target, b" HTTP/1.1\r\nHost: ", host, b"\r\n"]
        headers = self.headers
        if self.conn_values is not None:
            named = h.named_by_connection(h.connection_tokens(self.conn_values))
            if named:
                headers = h.drop_named(headers, named)
        if fwd.request_headers:
            headers = h.apply_modifiers(headers, fwd.request_headers)
        parts += headers
        xff = self.forwarded_for
        proto = self.forwarded_proto
        if xff is None and proto is None:
            parts.append(down.forwarded)  # X-Forwarded-For: peer, X-Forwarded-Proto
        else:
            # only from a trusted proxy (GatewaySettings.trusted_proxies)
            parts.append(b"X-Forwarded-For: ")
            if xff is not None:
                parts += (xff, b", ")
            parts.append(down.peer)
            if proto is None:
                parts.append(down.listener.forwarded)
            else:
                parts += (b"\r\nX-Forwarded-Proto: ", proto, b"\r\n")
        forwarded_host = self.forwarded_host or self.host
        if forwarded_host is not None:
            parts += (b"X-Forwarded-Host: ", forwarded_host, b"\r\n")
        if self.request_id is None:
            self.request_id = down.ctx.new_request_id()
            parts += (b"X-Request-Id: ", self.request_id, b"\r\n")
        if self.body == BODY_CHUNKED:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        if self.te_trailers:
            parts.append(b"TE: trailers\r\n")
        if self.upgrade is not None:
            parts += (b"Connection: upgrade\r\nUpgrade: ", self.upgrade, b"\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    # -- request body from the client ----------------------------------------------------------

    def body_chunk(self, chunk: bytes) -> None:
        if self.body == BODY_CHUNKED:
            chunk = b"%x\r\n%b\r\n" % (len(chunk), chunk)
        if self._send(chunk):
            self.down.pause(PAUSE_BODY)

    def body_end(self) -> None:
        if self.body == BODY_CHUNKED:
            self._send(b"0\r\n\r\n")  # trailers are not forwarded (Envoy's default too)
        self.request_done = True
        if self.mirror_targets is not None:
            self.down.ctx.mirrors.send_buffered(self)

    def _send(self, data: bytes) -> bool:
        """Write request body bytes upstream, or keep them until bound; True when kept."""
        if self.mirror_body is not None:
            self.down.ctx.mirrors.copy_body(self, data)
        if self.replay is not None:
            retrying.keep_body(self, data)
        up = self.up
        if up is not None:
            up.transport.write(data)
        elif not self.finished:
            if self.pending is None:
                self.pending = [data]
            else:
                self.pending.append(data)
            return True
        return False

    # -- upstream side (see gateway.upstreams.Requester) -----------------------------------------

    def bind(self, conn: UpstreamConnection, *, reused: bool) -> None:
        if self.up is not None or conn.pool is not self.pool:
            conn.pool.release(conn)  # a connect of an attempt that a retry replaced
            return
        self.up = conn
        conn.exchange = self
        conn.received = False
        conn.uses += 1
        pending = self.pending
        if pending is not None:
            self.pending = None
            conn.transport.write(self.up_head + b"".join(pending))
            self.down.resume(PAUSE_BODY)
        else:
            conn.transport.write(self.up_head)
        if self.down.write_paused:
            conn.read_paused = True
            conn.transport.pause_reading()

    def connect_failed(self, error: UpstreamConnectError) -> None:
        handle_connect_failure(self, error)

    def deliver(self, data: bytes) -> None:
        self.sent = self.responding  # interim 1xx bytes do not count: a final reply may follow
        down = self.down
        if not down.closing:
            self.sent_bytes += len(data)
            down.transport.write(data)

    def retry_status(self, status: int) -> bool:
        """Called with an upstream response head: drop this answer and retry instead?"""
        self.status_retry = retrying.retries_status(self, status)
        return self.status_retry

    def response_complete(self) -> None:
        self.up = None
        if self.status_retry:
            # The dropped answer has been read (its connection went back to the pool).
            self.status_retry = False
            self.discard = False
            self.responding = False
            status, self.status = self.status, 0
            if not retrying.failed(self, status=status):
                reply(self, status, "upstream_status")
            return
        self.finished = True
        retrying.succeeded(self, self.down.ctx.now)
        self.settle()
        self.down.exchange_done(self)

    def upstream_lost(self, conn: UpstreamConnection) -> None:
        """The upstream connection closed before the response was complete."""
        handle_upstream_loss(self, conn)

    def protocol_error(self) -> None:
        handle_protocol_error(self)

    def upgraded(self) -> None:
        self.deadline = INF
        counters = self.down.ctx.counters
        counters.upgrades += 1
        counters.responses[1] += 1
        self.down.start_splice(self)

    def upstream_paused(self) -> None:
        self.down.pause(PAUSE_UPSTREAM)

    def upstream_resumed(self) -> None:
        self.down.resume(PAUSE_UPSTREAM)

    # -- endings -------------------------------------------------------------------------------
    # Local replies and aborts (gateway.replies) end an exchange through these too.

    def must_close(self) -> bool:
        """Whether a reply sent now must close the client connection (the request's rest unread)."""
        if not self.keep_alive or self.bad is not None or self.down.ctx.draining:
            return True
        if self.upgrade is not None:
            return True
        # The rest of the request body is read and dropped only when it is short, and never when
        # the client waits for 100 Continue: it may send the body or not (RFC 9110 §10.1.1).
        unread_body = not self.request_done and (
            self.body == BODY_CHUNKED
            or self.content_length > DISCARD_BODY_BYTES
            or self.expect_continue
        )
        return unread_body

    def end_locally(self, data: bytes, close: bool) -> None:
        """Send a reply made here (never relayed) and end the exchange with it."""
        self.close_after = close
        self.finished = True
        if self.pending is not None:
            self.pending = None
            self.down.resume(PAUSE_BODY)
        self.settle()
        self.deliver(data)
        self.down.exchange_done(self)

    def let_go(self) -> None:
        """Give up the upstream side mid-exchange (`upstreams.let_go`); retries then pick anew."""
        upstreams.let_go(self)

    def settle(self) -> None:
        """Release what the exchange holds (pool slot, retry state): every ending calls it."""
        pool = self.pool
        if pool is not None:
            self.pool = None
            pool.active -= 1
        if self.tries:
            retrying.end(self)
