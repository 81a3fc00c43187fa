"""Admission limits: token-bucket rates, concurrency caps, circuit breakers, retry budget. Pure.

The gateway keeps the counters (in-flight requests per tenant, connections per backend, ...) and
asks these functions whether one more is allowed; every answer is a pure function of the
counters, the configuration and `now`.

* Tenant quotas (`model.RateLimit`): a token bucket holding up to `burst` tokens, refilled at
  `requests_per_s`; an empty bucket means 429 with `Retry-After` (`retry_after_header`).
  Starting full, it admits at most `burst + requests_per_s * t` requests in any `t` seconds.
  `max_concurrent` caps in-flight requests (`try_acquire` / `release`).
* Circuit breakers per backend (Envoy `CircuitBreakers.Thresholds`, all 1024 by default except
  retries, 3): a request is refused once `max_requests` are in flight; a request that must wait
  for a connection (none idle and `max_connections` open) is refused once `max_pending_requests`
  already wait. Refusals are 503s whose reason is the `Overflow` value.
* Retry budget (Envoy `retry_budget`): concurrent retries may reach `budget_percent` of the
  active requests, but never fewer than `min_retry_concurrency`. It replaces the `max_retries`
  breaker when a retry policy carries one (ours always does).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import NamedTuple

from policies.model import RateLimit, Retry


class Bucket(NamedTuple):
    """A token bucket's level, as of `updated` (the `now` of the last `take`).

    A tuple rather than a frozen dataclass: one is made per request, at half the cost.
    """

    tokens: float
    updated: float


def take(
    limit: RateLimit, bucket: Bucket | None, now: float, *, cost: float = 1.0
) -> tuple[Bucket, bool, float]:
    """Try to spend `cost` tokens: `(bucket, allowed, retry_after_s)`.

    `bucket` None is a new tenant: a full bucket. `retry_after_s` is 0 when allowed, else the
    wait until `cost` tokens will exist (infinite when the rate is 0). Time running backwards
    (a caller mixing clocks) refills nothing.
    """
    if bucket is None:
        tokens = float(limit.burst)
    else:
        elapsed = max(0.0, now - bucket.updated)
        tokens = min(float(limit.burst), bucket.tokens + elapsed * limit.requests_per_s)
    if tokens >= cost:
        return Bucket(tokens - cost, now), True, 0.0
    rate = limit.requests_per_s
    wait = (cost - tokens) / rate if rate > 0 else math.inf
    return Bucket(tokens, now), False, wait


MAX_RETRY_AFTER_S = 3600


def retry_after_header(retry_after_s: float) -> str:
    """The `Retry-After` value (RFC 9110 §10.2.3: whole seconds), at least 1, at most an hour."""
    if retry_after_s >= MAX_RETRY_AFTER_S:
        return str(MAX_RETRY_AFTER_S)
    return str(max(1, math.ceil(retry_after_s)))


def try_acquire(active: int, limit: int) -> tuple[int, bool]:
    """One more in-flight request against `limit` (0 = unlimited): `(active, allowed)`."""
    if limit > 0 and active >= limit:
        return active, False
    return active + 1, True


def release(active: int) -> int:
    """One in-flight request finished (never below zero, whatever the caller miscounts)."""
    return max(0, active - 1)


@dataclasses.dataclass(frozen=True, slots=True)
class Thresholds:
    """Circuit-breaker limits per backend; Envoy's defaults."""

    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3  # used only without a retry budget


class Overflow(enum.Enum):
    """Which breaker refused; the value is the stable reason code."""

    REQUESTS = "upstream_requests_overflow"
    PENDING = "upstream_pending_overflow"
    RETRIES = "upstream_retries_overflow"


def admit_request(thresholds: Thresholds, *, active_requests: int) -> Overflow | None:
    """May a new request start towards the backend (`active_requests` already in flight)?"""
    return Overflow.REQUESTS if active_requests >= thresholds.max_requests else None


def may_connect(thresholds: Thresholds, *, connections: int) -> bool:
    """May the pool open one more connection? If not, the request waits (see `admit_pending`)."""
    return connections < thresholds.max_connections


def admit_pending(thresholds: Thresholds, *, pending_requests: int) -> Overflow | None:
    """May one more request wait for a connection (`pending_requests` already waiting)?"""
    return Overflow.PENDING if pending_requests >= thresholds.max_pending_requests else None


def retry_budget_allows(policy: Retry, *, active_requests: int, active_retries: int) -> bool:
    """May one more retry start, with `active_retries` of the `active_requests` being retries?"""
    budget = max(
        float(policy.min_retry_concurrency), policy.budget_percent / 100.0 * active_requests
    )
    return active_retries < budget


def admit_retry(thresholds: Thresholds, *, active_retries: int) -> Overflow | None:
    """The `max_retries` breaker, for callers without a retry budget."""
    return Overflow.RETRIES if active_retries >= thresholds.max_retries else None
