"""How a client connection ends by time: the gateway's tick checks each one (`check_downstream`),
and `linger` starts a lingering close. No I/O of its own: it acts through the protocol and
its transport.

Deadlines: a head not complete `header_timeout_s` after its first byte is refused with 408 (a
connection that sends nothing that long after accept is closed); a connection idle between
requests longer than `downstream_idle_s` is closed; a request past its deadline or idle timeout
(the route's) times out (`gateway.upstream_failures.handle_timeout`: a retry, else 504); during a
drain, a connection with no request in progress is closed at the next tick, and so is a
lingering one.

Closing while the client may still be sending (a refusal, or an upstream that answered before
the request body ended) is a lingering close, as nginx does: on Linux, closing a socket with
unread bytes sends a reset, and a reset can destroy the response in the client's receive
buffer before the client reads it. So the gateway half-closes after the response, reads and
drops what still arrives, and closes when the client does, or after `lingering_time_s` in all
or `lingering_timeout_s` of silence.

Its own module because none of this is per-byte or per-request code: `check_downstream` runs
once per connection per tick (`tick_s`), `linger` at most once per connection. It is part of
`DownstreamProtocol`'s implementation and reads and sets that class's private state; kept
apart, `gateway.downstream` holds the transport and parser callbacks and the pipeline they
drive.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.exchange import INF
from gateway.upstream_failures import handle_timeout

if TYPE_CHECKING:
    from gateway.downstream import DownstreamProtocol


def linger(down: DownstreamProtocol) -> None:
    """Close without a reset destroying the response: half-close once the response is
    flushed, then read and drop until the client closes or the lingering time is over."""
    if down.closing:
        return
    transport = down.transport
    down.closing = True
    down._broken = True  # whatever arrives now is dropped unparsed
    down._held = None
    down._linger_until = down.ctx.now + down.ctx.settings.lingering_time_s
    down.last_seen = down.ctx.now
    if transport.can_write_eof():
        transport.write_eof()  # FIN after the buffered response: the client sees the end
    # A TLS transport cannot half-close; it still reads and drops, and the response is
    # already complete by its framing (`Connection: close` with a length).
    down._paused = 0
    transport.resume_reading()


def check_downstream(down: DownstreamProtocol, now: float) -> None:
    """Deadlines and idle limits of one client connection, called by the gateway's tick."""
    if down._linger_until:
        # A drain does not wait for lingering clients: their answer went out already.
        if (
            now >= down._linger_until
            or now - down.last_seen > down.ctx.settings.lingering_timeout_s
            or down.ctx.draining
        ):
            down.close()
        return
    ex = down._active
    if ex is None:
        settings = down.ctx.settings
        head = down._ex
        if now - down._head_since > settings.header_timeout_s:
            if head is None and down._fresh:
                down.close()  # connected, never sent a byte: nothing to answer
                return
            if head is not None and not head.parsed and not down._broken:
                down._refuse("request_timeout")  # slowloris: 408 and close
                return
        # Idle between requests (or stalled inside a body): closed after downstream_idle_s.
        if now - down.last_seen > settings.downstream_idle_s or (
            down.ctx.draining and down._ex is None
        ):
            down.close()
        return
    if now >= ex.deadline:
        handle_timeout(ex)
    elif ex.idle_s < INF:
        up = ex.up
        last = down.last_seen if up is None else max(down.last_seen, up.last_seen)
        if now - last > ex.idle_s:
            handle_timeout(ex)
