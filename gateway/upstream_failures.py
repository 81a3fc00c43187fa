"""What an exchange does when its upstream attempt fails before the response is complete: the
connect failed (`handle_connect_failure`), the connection closed (`handle_upstream_loss`), the
upstream sent something that is not HTTP/1.1 (`handle_protocol_error`), or the try's deadline
passed (`handle_timeout`). No I/O of its own.

Each failure is retried where `gateway.retrying` allows it, and otherwise ends the exchange with
one local reply (`gateway.replies`), or by closing the client connection once response bytes
went out. Apart from those retries, a reused keep-alive connection that dies before any
response byte (the stale keep-alive race) has a bodiless idempotent request resent once on a
new connection.

Its own module because these are the exchange's error paths, and none of them runs for a request
that is forwarded and answered. An upstream connection reports failures through its
`Requester`'s methods (`Exchange.connect_failed`, `upstream_lost`, `protocol_error`), which hand
over to the functions here; the tick in `gateway.deadlines` calls `handle_timeout` itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway import retrying
from gateway.headers import BODY_NONE
from gateway.replies import abort_client, reply
from policies.retries import Failure

if TYPE_CHECKING:
    from gateway.errors import UpstreamConnectError
    from gateway.exchange import Exchange
    from gateway.upstream_connection import UpstreamConnection

# RFC 9110 §9.2.2; a reused connection that dies before any response byte is retried once only
# for these, and only without a body (RFC 9112 §9.3.1.1).
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


def handle_connect_failure(ex: Exchange, error: UpstreamConnectError) -> None:
    pool = ex.pool
    if ex.finished or pool is None or pool.address != error.address or ex.up is not None:
        return  # a connect of an attempt that a retry replaced
    if not retrying.failed(ex, Failure.CONNECT_FAILURE):
        reply(ex, error.status, error.reason)


def handle_upstream_loss(ex: Exchange, conn: UpstreamConnection) -> None:
    """The upstream connection closed before the response was complete."""
    ex.up = None
    if ex.finished:
        return
    ctx = ex.down.ctx
    if ex.sent:
        abort_client(ex)
        return
    if (
        conn.uses > 1
        and not conn.received
        and not ex.retried
        and ex.body == BODY_NONE
        and ex.method in IDEMPOTENT
        and ex.endpoint is not None
        and ex.forward is not None
    ):
        # A reused keep-alive connection the upstream had closed just as we sent on it (the
        # stale keep-alive race): resend once on a new connection. Only a bodiless idempotent
        # request, so a request the upstream did see cannot do harm twice.
        ex.retried = True
        ctx.counters.upstream_stale_retries += 1
        ctx.pools.send(ex, ex.endpoint, ex.forward.settings.timeouts.connect_s, fresh=True)
        return
    ctx.counters.upstream_reset += 1
    if not retrying.failed(ex, Failure.RESET):
        reply(ex, 502, "upstream_reset")


def handle_protocol_error(ex: Exchange) -> None:
    up = ex.up
    if up is not None:
        ex.up = None
        up.detach()
    reply(ex, 502, "upstream_protocol_error")


def handle_timeout(ex: Exchange) -> None:
    """The try's or the request's deadline passed (or its idle timeout): retry, else 504."""
    ctx = ex.down.ctx
    ctx.counters.upstream_timeouts += 1
    if ctx.now < ex.overall and retrying.failed(ex, Failure.TIMEOUT):
        return
    reply(ex, 504, "upstream_timeout")
