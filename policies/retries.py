"""Retry decisions: whether to retry, how long to wait, where the next attempt goes. Pure.

Safe by default (reference: Envoy's router filter, NGINX and Traefik):

* No retries unless the route has a `model.Retry`; then up to `attempts` retries.
* Only idempotent methods (RFC 9110 §9.2.2) unless `allow_non_idempotent`: Envoy would retry a
  POST on `5xx`, NGINX and Traefik would not, and neither do we.
* Never once a response byte has gone downstream, and never when the request body could not be
  kept for replay (larger than `max_body_bytes`).
* Conditions as Envoy reads them: `connect-failure`; `reset` (also covers connect failures);
  `gateway-error` (502/503/504, plus resets and per-try timeouts, which become 503/504);
  `5xx` (any 5xx, resets, timeouts); `retriable-4xx` (409); `retriable-status-codes` (`codes`).
* Within the retry budget (`policies.limits.retry_budget_allows`), which the caller evaluates.
* Backoff is full jitter: retry N waits a uniform time in `[0, min(cap, (2^N - 1) * base))`,
  base 25 ms and cap 250 ms by default.
* Placement (`next_pick`): another endpoint of the same cluster first (Envoy's previous_hosts),
  then another cluster (previous_priorities, per cluster), then, with everything tried, any
  candidate again: a stale keep-alive reset is worth retrying on the same endpoint.
"""

from __future__ import annotations

import enum
from collections.abc import Collection

from policies.balancing import BackendView, Pick
from policies.model import Retry
from policies.table import Endpoint

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
GATEWAY_ERRORS = frozenset({502, 503, 504})


class Failure(enum.Enum):
    """How an attempt failed before a response head arrived. The caller classifies."""

    CONNECT_FAILURE = "connect-failure"  # refused, unreachable, connect timeout, TLS handshake
    RESET = "reset"  # connection closed or reset before the response head was complete
    TIMEOUT = "timeout"  # per-try timeout (never the route's overall timeout: that is final)


# Which `on` conditions cover each failure (Envoy `RetryStateImpl::wouldRetryFromReset`).
_COVERS = {
    Failure.CONNECT_FAILURE: frozenset({"connect-failure", "reset", "gateway-error", "5xx"}),
    Failure.RESET: frozenset({"reset", "gateway-error", "5xx"}),
    Failure.TIMEOUT: frozenset({"gateway-error", "5xx"}),
}


def retriable(policy: Retry, *, failure: Failure | None = None, status: int | None = None) -> bool:
    """Does the policy's `on` list cover this failure, or this upstream status?"""
    on = policy.on
    if failure is not None:
        return not _COVERS[failure].isdisjoint(on)
    if status is None:
        return False
    return (
        ("5xx" in on and 500 <= status <= 599)
        or ("gateway-error" in on and status in GATEWAY_ERRORS)
        or ("retriable-4xx" in on and status == 409)
        or ("retriable-status-codes" in on and status in policy.codes)
    )


def should_retry(
    policy: Retry | None,
    *,
    method: str,
    attempt: int,
    failure: Failure | None = None,
    status: int | None = None,
    response_started: bool,
    body_buffered: bool,
    budget_ok: bool,
) -> bool:
    """Retry after try number `attempt` (1 = the original request) failed?

    `body_buffered`: the whole request body is held for replay (trivially true without a body).
    `budget_ok`: the retry budget (or the max-retries breaker) has room.
    """
    return (
        policy is not None
        and attempt <= policy.attempts
        and not response_started
        and body_buffered
        and budget_ok
        and (policy.allow_non_idempotent or method.upper() in IDEMPOTENT_METHODS)
        and retriable(policy, failure=failure, status=status)
    )


MAX_DOUBLINGS = 62  # beyond this (2^N - 1) * base is above any cap; keeps the float finite


def full_jitter(attempt: int, roll: float, *, base_s: float = 0.025, cap_s: float = 0.25) -> float:
    """Seconds to wait before retry number `attempt` (1-based): uniform in [0, ceiling)."""
    doublings = min(max(attempt, 0), MAX_DOUBLINGS)
    return roll * min(cap_s, ((1 << doublings) - 1) * base_s)


def backoff_s(policy: Retry, attempt: int, roll: float) -> float:
    """`full_jitter` with the policy's base and cap."""
    return full_jitter(attempt, roll, base_s=policy.backoff_base_s, cap_s=policy.backoff_max_s)


def next_pick(
    view: BackendView,
    last: Pick,
    tried: Collection[Endpoint],
    *,
    tier_roll: float,
    cluster_roll: float,
) -> Pick | None:
    """Where the next attempt may go, after the endpoints in `tried` (`last` among them).

    1. `last`'s cluster without the tried endpoints;
    2. else the view without every cluster tried so far (tier loads recomputed, so a retry
       spills to the next tier when the first is exhausted);
    3. else the whole view again, preferring untried endpoints.
    None only when the view itself has nothing to offer.
    """
    ids = frozenset(endpoint.id for endpoint in tried)
    same = last.without(ids)
    if same is not None:
        return same
    clusters = frozenset(endpoint.cluster for endpoint in tried) | {last.target.cluster}
    other = view.excluding(clusters).pick(tier_roll=tier_roll, cluster_roll=cluster_roll)
    if other is not None:
        return other  # in an untried cluster, so none of its endpoints were tried
    again = view.pick(tier_roll=tier_roll, cluster_roll=cluster_roll)
    if again is None:
        return None
    return again.without(ids) or again
