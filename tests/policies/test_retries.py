"""Retry decisions: safe by default, full-jitter backoff, another endpoint then another cluster."""

from __future__ import annotations

from typing import Any

import pytest

from policies import balancing, retries
from policies.model import Retry, ServiceRef
from policies.retries import Failure
from policies.table import Backend, ClusterTarget, Endpoint

DEFAULT = Retry()  # 1 retry on connect-failure, reset
EVERYTHING = Retry(
    attempts=3, on=("gateway-error", "retriable-status-codes", "retriable-4xx"), codes=(429,)
)


def decide(
    policy: Retry | None = DEFAULT,
    *,
    method: str = "GET",
    attempt: int = 1,
    response_started: bool = False,
    body_buffered: bool = True,
    budget_ok: bool = True,
) -> bool:
    return retries.should_retry(
        policy,
        method=method,
        attempt=attempt,
        failure=Failure.CONNECT_FAILURE,
        response_started=response_started,
        body_buffered=body_buffered,
        budget_ok=budget_ok,
    )


@pytest.mark.parametrize(
    ("policy", "overrides", "expected"),
    [
        pytest.param(DEFAULT, {}, True, id="get-after-connect-failure"),
        pytest.param(None, {}, False, id="off-unless-configured"),
        pytest.param(DEFAULT, {"attempt": 2}, False, id="one-retry-by-default"),
        pytest.param(EVERYTHING, {"attempt": 3}, True, id="third-retry-allowed"),
        pytest.param(EVERYTHING, {"attempt": 4}, False, id="fourth-retry-refused"),
        pytest.param(DEFAULT, {"method": "POST"}, False, id="post-not-idempotent"),
        pytest.param(DEFAULT, {"method": "PATCH"}, False, id="patch-not-idempotent"),
        pytest.param(DEFAULT, {"method": "put"}, True, id="put-is-idempotent-any-case"),
        pytest.param(
            Retry(allow_non_idempotent=True), {"method": "POST"}, True, id="post-opted-in"
        ),
        pytest.param(DEFAULT, {"response_started": True}, False, id="never-after-first-byte"),
        pytest.param(DEFAULT, {"body_buffered": False}, False, id="body-too-large-to-replay"),
        pytest.param(DEFAULT, {"budget_ok": False}, False, id="budget-exhausted"),
    ],
)
def test_should_retry(policy: Retry | None, overrides: dict[str, Any], expected: bool) -> None:
    assert decide(policy, **overrides) is expected


@pytest.mark.parametrize(
    ("on", "failure", "status", "expected"),
    [
        pytest.param(("connect-failure",), Failure.CONNECT_FAILURE, None, True, id="cf-cf"),
        pytest.param(("connect-failure",), Failure.RESET, None, False, id="cf-not-reset"),
        pytest.param(("reset",), Failure.CONNECT_FAILURE, None, True, id="reset-covers-cf"),
        pytest.param(("reset",), Failure.TIMEOUT, None, False, id="reset-not-timeout"),
        pytest.param(("gateway-error",), Failure.RESET, None, True, id="gw-covers-reset"),
        pytest.param(("gateway-error",), Failure.TIMEOUT, None, True, id="gw-covers-timeout"),
        pytest.param(("5xx",), Failure.TIMEOUT, None, True, id="5xx-covers-timeout"),
        pytest.param(("gateway-error",), None, 503, True, id="gw-503"),
        pytest.param(("gateway-error",), None, 500, False, id="gw-not-500"),
        pytest.param(("5xx",), None, 500, True, id="5xx-500"),
        pytest.param(("5xx",), None, 404, False, id="5xx-not-404"),
        pytest.param(("retriable-4xx",), None, 409, True, id="4xx-409"),
        pytest.param(("retriable-4xx",), None, 429, False, id="4xx-only-409"),
        pytest.param(("retriable-status-codes",), None, 429, True, id="codes-429"),
        pytest.param(("retriable-status-codes",), None, 503, False, id="codes-not-listed"),
        pytest.param(("connect-failure", "reset"), None, 503, False, id="default-not-status"),
        pytest.param(("5xx",), None, None, False, id="nothing-to-judge"),
    ],
)
def test_conditions(
    on: tuple[str, ...], failure: Failure | None, status: int | None, expected: bool
) -> None:
    policy = Retry(on=on, codes=(429,))
    assert retries.retriable(policy, failure=failure, status=status) is expected


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(0, 0.0), (1, 0.025), (2, 0.075), (3, 0.175), (4, 0.25), (10, 0.25), (10**6, 0.25)],
)
def test_full_jitter_ceiling(attempt: int, ceiling: float) -> None:
    assert retries.full_jitter(attempt, 0.0) == 0.0
    assert retries.full_jitter(attempt, 0.5) == pytest.approx(ceiling / 2)
    assert retries.full_jitter(attempt, 0.9999999) < ceiling or ceiling == 0.0


def test_backoff_uses_the_policy() -> None:
    policy = Retry(backoff_base_s=0.1, backoff_max_s=1.0)
    assert retries.backoff_s(policy, 2, 0.5) == pytest.approx(0.15)
    assert retries.backoff_s(policy, 5, 0.5) == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------
# Placement: another endpoint, then another cluster, then anything.

SERVICE = ServiceRef("shop", "web", 80)


def target(cluster: str, priority: int, count: int, subnet: int) -> ClusterTarget:
    endpoints = tuple(Endpoint(f"127.0.{subnet}.{i + 1}", 8080, cluster) for i in range(count))
    return ClusterTarget(cluster, priority, 1, endpoints)


def view(*targets: ClusterTarget) -> balancing.BackendView:
    backend = Backend(str(SERVICE), SERVICE, 1, targets)
    return balancing.view_backend(backend, lambda e: True)


def first_pick(v: balancing.BackendView) -> balancing.Pick:
    pick = v.pick(tier_roll=0.0, cluster_roll=0.0)
    assert pick is not None
    return pick


def test_retry_goes_to_another_endpoint_of_the_same_cluster_first() -> None:
    v = view(target("east", 0, 3, 1), target("west", 1, 3, 2))
    last = first_pick(v)
    tried = [last.candidates[0]]
    nxt = retries.next_pick(v, last, tried, tier_roll=0.0, cluster_roll=0.0)
    assert nxt is not None
    assert nxt.target.cluster == "east"
    assert tried[0] not in nxt.candidates


def test_then_another_cluster_spilling_to_the_next_tier() -> None:
    v = view(target("east", 0, 2, 1), target("west", 1, 2, 2))
    last = first_pick(v)
    nxt = retries.next_pick(v, last, list(last.candidates), tier_roll=0.0, cluster_roll=0.0)
    assert nxt is not None
    assert nxt.target.cluster == "west"


def test_with_everything_tried_any_endpoint_again() -> None:
    v = view(target("east", 0, 1, 1))
    last = first_pick(v)
    nxt = retries.next_pick(v, last, list(last.candidates), tier_roll=0.0, cluster_roll=0.0)
    assert nxt == last  # the same endpoint on a fresh connection (stale keep-alive reset)


def test_with_everything_tried_untried_endpoints_come_first() -> None:
    v = view(target("east", 0, 2, 1), target("west", 0, 2, 2))
    last = first_pick(v)  # east
    west = v.excluding({"east"}).pick(tier_roll=0.0, cluster_roll=0.0)
    assert west is not None
    # east exhausted, west half tried: west's untried endpoint is what remains
    tried = [*last.candidates, west.candidates[0]]
    nxt = retries.next_pick(v, last, tried, tier_roll=0.0, cluster_roll=0.99)
    assert nxt is not None
    assert nxt.candidates == (west.candidates[1],)


def test_nothing_to_offer() -> None:
    empty = view()
    last = balancing.Pick(target("east", 0, 0, 1), 0, False, (), ())
    assert retries.next_pick(empty, last, [], tier_roll=0.5, cluster_roll=0.5) is None
