"""How an exchange ends without relaying a complete upstream response: a local reply (`reply`,
and `redirect` for a redirect rule) or an abort (`abort` when the client connection is gone,
`abort_client` when response bytes already went out and closing is the only honest signal left).
No I/O of its own: the bytes go out through the exchange's `deliver`.

`reply` is the one way every failure reaches the client (STYLE §3.5): a status, the reason as
`x-gateway-reason`, counted in `local_replies`. Whether a local reply closes the client
connection is `Exchange.must_close` (the rest of a short request body is read and dropped).

Its own module because none of this runs for a request that is forwarded and answered: those
stay in `gateway.exchange`, which is left with the per-request path. The endings go through
`Exchange.must_close`, `end_locally` and `settle`, which stay in the class: `settle` ends every
exchange, and the other two read the body and pause flags `gateway.exchange` defines, which this
module, imported by it, cannot import.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway import headers as h

if TYPE_CHECKING:
    from gateway.exchange import Exchange
    from policies.matching import Redirect


def reply(ex: Exchange, status: int, reason: str, extra: Sequence[bytes] = ()) -> None:
    """End the exchange with a local reply: the one way every failure reaches the client."""
    if ex.finished:
        return
    if ex.sent:
        abort_client(ex)
        return
    up = ex.up
    if up is not None:
        ex.up = None
        up.detach()
    ex.down.ctx.counters.count_reply(reason)
    ex.status = status
    ex.reason = reason
    close = ex.must_close()
    if ex.request_id is None:
        ex.request_id = ex.down.ctx.new_request_id()
    data = h.local_reply(
        status,
        reason,
        close=close,
        request_id=ex.request_id,
        head=ex.head_request,
        extra=extra,
    )
    ex.end_locally(data, close)


def redirect(ex: Exchange, decision: Redirect) -> None:
    """Answer a redirect rule's decision (its status and Location) without an upstream."""
    extra: list[bytes] = []
    if decision.response_headers:
        extra = h.apply_modifiers(extra, decision.response_headers)
    close = ex.must_close()
    ex.status = decision.status
    ex.end_locally(
        h.redirect_reply(
            decision.status, decision.location.encode("latin-1"), close=close, extra=extra
        ),
        close,
    )


def abort(ex: Exchange) -> None:
    """The client connection is gone: release the upstream side, never reuse it."""
    ex.finished = True
    ex.mirror_targets = None
    ex.let_go()
    ex.settle()


def abort_client(ex: Exchange) -> None:
    """Response bytes already went out: closing the client connection is all that is left."""
    ex.let_go()
    ex.finished = True
    ex.settle()
    ex.down.close()
