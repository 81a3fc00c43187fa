"""Token buckets, concurrency caps, circuit breakers and the retry budget. Pure."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import limits
from policies.limits import Bucket, Overflow, Thresholds
from policies.model import RateLimit, Retry

PROPERTY = settings(deadline=None, database=None, max_examples=300)
LIMIT = RateLimit(requests_per_s=2.0, burst=3)


def test_new_tenant_gets_the_burst_then_waits() -> None:
    bucket = None
    allowed = []
    for _ in range(4):
        bucket, ok, wait = limits.take(LIMIT, bucket, 100.0)
        allowed.append((ok, wait))
    assert allowed == [(True, 0.0), (True, 0.0), (True, 0.0), (False, 0.5)]


def test_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    empty = Bucket(tokens=0.0, updated=0.0)
    bucket, ok, _ = limits.take(LIMIT, empty, 0.5)  # one token back after 0.5 s
    assert (ok, bucket) == (True, Bucket(0.0, 0.5))
    bucket, ok, _ = limits.take(LIMIT, empty, 1000.0)  # capped at the burst
    assert (ok, bucket.tokens) == (True, 2.0)


def test_clock_going_backwards_refills_nothing() -> None:
    bucket, ok, wait = limits.take(LIMIT, Bucket(0.25, 10.0), 5.0)
    assert (ok, bucket.tokens, wait) == (False, 0.25, 0.375)


def test_zero_rate_never_refills() -> None:
    limit = RateLimit(requests_per_s=0.0, burst=1)
    bucket, ok, _ = limits.take(limit, None, 0.0)
    _, ok, wait = limits.take(limit, bucket, 1e9)
    assert (ok, wait) == (False, math.inf)


@pytest.mark.parametrize(
    ("seconds", "header"),
    [(0.0, "1"), (0.2, "1"), (1.0, "1"), (1.01, "2"), (math.inf, "3600"), (5000.0, "3600")],
)
def test_retry_after_header(seconds: float, header: str) -> None:
    assert limits.retry_after_header(seconds) == header


@PROPERTY
@given(
    st.floats(0.1, 500.0),
    st.integers(1, 20),
    st.lists(st.floats(0.0, 0.5), min_size=1, max_size=200),
)
def test_bucket_never_allows_more_than_burst_plus_rate_times_t(
    rate: float, burst: int, gaps: list[float]
) -> None:
    limit = RateLimit(requests_per_s=rate, burst=burst)
    bucket = None
    now = 0.0
    granted: list[float] = []
    for gap in gaps:
        now += gap
        bucket, ok, wait = limits.take(limit, bucket, now)
        if ok:
            granted.append(now)
        else:
            assert wait > 0
    # Every window, not only from the start: a full bucket can open any of them.
    for i, start in enumerate(granted):
        for j in range(i, len(granted)):
            assert j - i + 1 <= burst + rate * (granted[j] - start) + 1e-6


@PROPERTY
@given(st.floats(0.1, 500.0), st.integers(1, 20), st.floats(0.0, 1.0))
def test_retry_after_is_enough(rate: float, burst: int, level: float) -> None:
    limit = RateLimit(requests_per_s=rate, burst=burst)
    bucket, ok, wait = limits.take(limit, Bucket(level * 0.99, 0.0), 0.0)
    assert not ok
    _, ok, _ = limits.take(limit, bucket, wait * (1 + 1e-9) + 1e-12)
    assert ok


def test_concurrency_accounting() -> None:
    active, ok = limits.try_acquire(1, 2)
    assert (active, ok) == (2, True)
    assert limits.try_acquire(2, 2) == (2, False)
    assert limits.try_acquire(10**6, 0) == (10**6 + 1, True)  # 0 = unlimited
    assert limits.release(2) == 1
    assert limits.release(0) == 0


def test_circuit_breaker_defaults_are_envoys() -> None:
    assert Thresholds() == Thresholds(1024, 1024, 1024, 3)


@pytest.mark.parametrize(
    ("active", "expected"), [(1023, None), (1024, Overflow.REQUESTS), (5000, Overflow.REQUESTS)]
)
def test_max_requests(active: int, expected: Overflow | None) -> None:
    assert limits.admit_request(Thresholds(), active_requests=active) is expected


def test_connections_then_pending() -> None:
    small = Thresholds(max_connections=2, max_pending_requests=1)
    assert limits.may_connect(small, connections=1)
    assert not limits.may_connect(small, connections=2)
    assert limits.admit_pending(small, pending_requests=0) is None
    assert limits.admit_pending(small, pending_requests=1) is Overflow.PENDING
    assert Overflow.PENDING.value == "upstream_pending_overflow"


def test_max_retries_breaker() -> None:
    assert limits.admit_retry(Thresholds(), active_retries=2) is None
    assert limits.admit_retry(Thresholds(), active_retries=3) is Overflow.RETRIES


@pytest.mark.parametrize(
    ("active_requests", "active_retries", "allowed"),
    [
        pytest.param(100, 19, True, id="under-20pct"),
        pytest.param(100, 20, False, id="at-20pct"),
        pytest.param(5, 2, True, id="minimum-3-applies"),
        pytest.param(5, 3, False, id="minimum-3-reached"),
        pytest.param(0, 0, True, id="idle-backend"),
    ],
)
def test_retry_budget(active_requests: int, active_retries: int, allowed: bool) -> None:
    result = limits.retry_budget_allows(
        Retry(), active_requests=active_requests, active_retries=active_retries
    )
    assert result is allowed
