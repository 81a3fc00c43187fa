"""Retries on live traffic: the exchange's failure paths ask here whether to try again, and where.

No I/O of its own: a retry is a timer (the jittered backoff) and a new `Pools.send`. The
decisions are `policies.retries` (conditions, idempotency, backoff, placement) and
`policies.limits.retry_budget_allows`; this module keeps the counts those need and also feeds
every attempt's outcome to passive outlier detection (`gateway.health`), since both look at the
same events.

Contract with `gateway.exchange.Exchange`:
* `begin` when a request is forwarded (first try): counts it as active, sets the per-try and
  overall deadlines, and decides whether the request body is kept for replay.
* `keep_body` for every request body byte sent upstream (already framed).
* `failed` from each failure before a complete response (connect failure, reset, per-try
  timeout): True means a retry is under way and the exchange must not reply.
* `succeeded` when a response completed; `end` exactly once when the exchange settles.
Retries stop once any response byte went to the client, past the overall deadline, outside the
budget, for non-idempotent methods (unless the policy allows them) and for bodies over
`Retry.max_body_bytes` (not buffered: Envoy's 1 MiB).
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

from gateway.headers import BODY_NONE
from policies import limits, retries
from policies.model import Retry, TrafficSettings
from policies.table import Endpoint

if TYPE_CHECKING:
    from gateway.exchange import Exchange

INF = float("inf")


class RetryBudget:
    """Active requests and active retries of one gateway (Envoy counts per cluster; one pool of
    both is stricter and simpler to reason about)."""

    __slots__ = ("active_requests", "active_retries")

    def __init__(self) -> None:
        self.active_requests = 0  # forwarded exchanges not yet settled
        self.active_retries = 0  # of those, the ones past their first try

    def allows(self, policy: Retry) -> bool:
        return limits.retry_budget_allows(
            policy, active_requests=self.active_requests, active_retries=self.active_retries
        )


def per_try_s(settings: TrafficSettings) -> float:
    """One try's limit: the retry policy's, else the rule's backend timeout; 0 = none."""
    retry = settings.retry
    if retry is not None and retry.per_try_timeout_s > 0:
        return retry.per_try_timeout_s
    return settings.timeouts.backend_request_s


def begin(ex: Exchange, settings: TrafficSettings, now: float) -> None:
    ex.down.ctx.budget.active_requests += 1
    ex.tries = 1
    timeouts = settings.timeouts
    total = timeouts.request_s
    ex.overall = overall = now + total if total > 0 else INF
    retry = settings.retry
    if retry is None:  # the common case, per request: `per_try_s` inlined
        one = timeouts.backend_request_s
        ex.deadline = min(overall, now + one) if one > 0 else overall
        return
    one = per_try_s(settings)
    ex.deadline = min(overall, now + one) if one > 0 else overall
    if ex.body != BODY_NONE and 0 <= ex.content_length <= retry.max_body_bytes:
        ex.replay = []
    elif ex.content_length < 0 and ex.body != BODY_NONE:
        ex.replay = []  # chunked: kept while it stays under the limit (see keep_body)


def keep_body(ex: Exchange, data: bytes) -> None:
    replay = ex.replay
    assert replay is not None
    ex.replay_bytes += len(data)
    retry = ex.forward.settings.retry if ex.forward is not None else None
    if retry is None or ex.replay_bytes > retry.max_body_bytes + 64 * 1024:
        ex.replay = None  # too large to replay (framing overhead allowed for): no retries
        return
    replay.append(data)


def succeeded(ex: Exchange, now: float) -> None:
    """A complete response: an outlier success unless it is a 5xx."""
    fwd = ex.forward
    if fwd is not None and fwd.settings.outlier_detection is not None:  # else nothing to record
        _outcome(ex, error=ex.status >= 500, now=now)


def end(ex: Exchange) -> None:
    """The exchange settled: release its budget slots (idempotent)."""
    if ex.tries == 0:
        return
    ctx = ex.down.ctx
    budget = ctx.budget
    budget.active_requests -= 1
    if ex.tries > 1:
        budget.active_retries -= 1
    ex.tries = 0
    if ex.forward is not None:
        ctx.limits.release(ex.forward)


def retries_status(ex: Exchange, status: int) -> bool:
    """Would an upstream answer with `status` be retried (so it must not reach the client)?"""
    fwd = ex.forward
    if fwd is None or ex.tries == 0 or ex.sent:
        return False
    policy = fwd.settings.retry
    if policy is None or not retries.retriable(policy, status=status):
        return False
    return ex.down.ctx.now < ex.overall and _allowed(ex, policy, None, status)


def _allowed(
    ex: Exchange, policy: Retry, failure: retries.Failure | None, status: int | None
) -> bool:
    ctx = ex.down.ctx
    budget_ok = ex.tries > 1 or ctx.budget.allows(policy)  # a retrying exchange holds its slot
    buffered = ex.body == BODY_NONE or ex.replay is not None
    started = ex.sent or ex.responding
    method = ex.method.decode("latin-1")
    if retries.should_retry(
        policy,
        method=method,
        attempt=ex.tries,
        failure=failure,
        status=status,
        response_started=started,
        body_buffered=buffered,
        budget_ok=budget_ok,
    ):
        return True
    if (
        ex.tries <= policy.attempts
        and not started
        and retries.retriable(policy, failure=failure, status=status)
        and (policy.allow_non_idempotent or method in retries.IDEMPOTENT_METHODS)
    ):
        ctx.counters.retries_exhausted += 1  # the budget or the body size said no
    return False


def failed(
    ex: Exchange, failure: retries.Failure | None = None, *, status: int | None = None
) -> bool:
    """Account a failed attempt (a failure, or an error status); start a retry if the policy
    allows one (True), else False."""
    ctx = ex.down.ctx
    now = ctx.now
    _outcome(ex, error=True, now=now)
    fwd = ex.forward
    if fwd is None or ex.finished or ex.tries == 0:
        return False
    policy = fwd.settings.retry
    if policy is None or now >= ex.overall:
        return False
    if not _allowed(ex, policy, failure, status):
        return False
    endpoint = ctx.router.repick(fwd.backend, fwd.settings, ex.tried)
    if endpoint is None:
        return False
    ex.let_go()
    if ex.tries == 1:
        ctx.budget.active_retries += 1
    ex.tries += 1
    ex.tried.append(endpoint)
    ex.endpoint = endpoint
    ex.status = 0
    ctx.counters.retries += 1
    if ex.replay:
        ex.pending = list(ex.replay)
    wait = retries.backoff_s(policy, ex.tries - 1, random.random())
    one = per_try_s(fwd.settings)
    ex.deadline = min(ex.overall, now + wait + one) if one > 0 else ex.overall
    asyncio.get_running_loop().call_later(wait, _resend, ex, endpoint)
    return True


def _resend(ex: Exchange, endpoint: Endpoint) -> None:
    if ex.finished or ex.endpoint is not endpoint or ex.forward is None:
        return
    ex.down.ctx.pools.send(ex, endpoint, ex.forward.settings.timeouts.connect_s)


def _outcome(ex: Exchange, *, error: bool, now: float) -> None:
    fwd = ex.forward
    endpoint = ex.endpoint
    monitor = ex.down.ctx.health
    if fwd is None or endpoint is None or monitor is None:
        return
    config = fwd.settings.outlier_detection
    if config is not None:
        monitor.record(endpoint, config, error=error, now=now)
