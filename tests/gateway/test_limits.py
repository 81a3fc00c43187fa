"""Tenant quotas (429 with Retry-After) and circuit breakers (503 circuit_open) on a gateway."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.server import Gateway
from policies.limits import Thresholds
from policies.model import (
    BackendRef,
    PolicySet,
    RateLimit,
    Route,
    RouteKind,
    Rule,
    ServiceRef,
    TrafficSettings,
)
from policies.table import RoutingTable, compile_table, inventory_from_clusters
from tests.conftest import eventually
from tests.gateway import tables
from tests.gateway.conftest import EAST, TEST_SETTINGS
from tests.gateway.fleet import Backends, fetch, session

SHOP = ServiceRef("shop", "web", 80)
BLOG = ServiceRef("blog", "web", 80)


def _tenants(address: str, shop: TrafficSettings, blog: TrafficSettings) -> RoutingTable:
    """Two tenants (namespaces shop and blog), each with its policy and service."""
    east = tables.member("east", {SHOP: [address], BLOG: [address]})
    routes = tuple(
        Route(
            RouteKind.TRAFFIC_POLICY,
            ref.namespace,
            "main",
            (f"{ref.namespace}.test",),
            (Rule(None, (), (), (BackendRef(ref),), settings),),
        )
        for ref, settings in ((SHOP, shop), (BLOG, blog))
    )
    policies = PolicySet(routes=routes, clusters=(east,))
    return compile_table(policies, inventory_from_clusters([east]), version=1)


@pytest.fixture
async def started() -> AsyncIterator[list[Gateway]]:
    gateways: list[Gateway] = []
    yield gateways
    for gw in gateways:
        await gw.close()


async def _gateway(started: list[Gateway], table: RoutingTable, **limits: Any) -> Gateway:
    gw = Gateway(TEST_SETTINGS, table, **limits)
    await gw.start()
    started.append(gw)
    return gw


async def test_a_tenant_over_its_rate_gets_429_while_another_is_unaffected(
    started: list[Gateway],
) -> None:
    limited = TrafficSettings(rate_limit=RateLimit(requests_per_s=0.01, burst=5))
    async with Backends() as backends:
        backend = await backends.start("east", EAST)
        table = _tenants(backend.address, limited, TrafficSettings())
        gw = await _gateway(started, table)
        shop: Counter[int] = Counter()
        blog: Counter[int] = Counter()
        async with session() as client:
            for _ in range(20):
                status, headers = await fetch(client, gw.addresses[0], host="shop.test")
                shop[status] += 1
                if status == 429:
                    assert headers["x-gateway-reason"] == "rate_limited"
                    assert int(headers["retry-after"]) >= 1
                blog[(await fetch(client, gw.addresses[0], host="blog.test"))[0]] += 1
        assert shop == {200: 5, 429: 15}
        assert blog == {200: 20}
        assert gw.counters.quota_rejections == 15


async def test_a_namespace_quota_limits_every_policy_of_the_namespace(
    started: list[Gateway],
) -> None:
    async with Backends() as backends:
        backend = await backends.start("east", EAST)
        table = _tenants(backend.address, TrafficSettings(), TrafficSettings())
        quotas = {"blog": RateLimit(requests_per_s=0.01, burst=3)}
        gw = await _gateway(started, table, namespace_quotas=quotas)
        async with session() as client:
            blog = [(await fetch(client, gw.addresses[0], host="blog.test"))[0] for _ in range(6)]
            shop = [(await fetch(client, gw.addresses[0], host="shop.test"))[0] for _ in range(6)]
        assert blog == [200, 200, 200, 429, 429, 429]
        assert shop == [200] * 6


async def test_a_concurrency_quota_and_the_circuit_breaker_refuse_at_once(
    started: list[Gateway],
) -> None:
    async with Backends() as backends:
        backend = await backends.start("east", EAST)
        backend.latency_s = 0.3
        concurrent = TrafficSettings(rate_limit=RateLimit(1000, 1000, max_concurrent=1))
        table = _tenants(backend.address, concurrent, TrafficSettings())
        gw = await _gateway(started, table, breaker=Thresholds(max_requests=2))
        async with session() as client, asyncio.TaskGroup() as tg:
            shop = [
                tg.create_task(fetch(client, gw.addresses[0], host="shop.test")) for _ in range(2)
            ]
            blog = [
                tg.create_task(fetch(client, gw.addresses[0], host="blog.test")) for _ in range(3)
            ]
        shop_statuses = sorted(task.result()[0] for task in shop)
        blog_reasons = Counter(task.result()[1].get("x-gateway-reason") for task in blog)
        assert shop_statuses == [200, 429]
        assert gw.counters.circuit_open == blog_reasons["circuit_open"] >= 1


async def test_new_namespace_quotas_replace_the_old_ones_on_a_live_gateway(
    started: list[Gateway],
) -> None:
    async with Backends() as backends:
        backend = await backends.start("east", EAST)
        table = _tenants(backend.address, TrafficSettings(), TrafficSettings())
        quotas = {"blog": RateLimit(requests_per_s=0.01, burst=1)}
        gw = await _gateway(started, table, namespace_quotas=quotas)
        limits = gw.ctx.limits
        async with session() as client:

            async def statuses(host: str, count: int) -> list[int]:
                return [(await fetch(client, gw.addresses[0], host=host))[0] for _ in range(count)]

            assert await statuses("blog.test", 2) == [200, 429]
            # The administrator moves the quota from blog to shop.
            limits.configure(Thresholds(), {"shop": RateLimit(requests_per_s=0.01, burst=2)})
            assert await statuses("blog.test", 3) == [200] * 3
            assert await statuses("shop.test", 3) == [200, 200, 429]
            # Back on blog: a fresh bucket, not the one emptied before.
            limits.configure(Thresholds(), {"blog": RateLimit(requests_per_s=0.01, burst=1)})
            assert await statuses("blog.test", 2) == [200, 429]
            assert await statuses("shop.test", 2) == [200, 200]


async def test_a_concurrency_cap_removed_and_added_back_starts_from_zero(
    started: list[Gateway],
) -> None:
    async with Backends() as backends:
        backend = await backends.start("east", EAST)
        backend.latency_s = 0.5
        table = _tenants(backend.address, TrafficSettings(), TrafficSettings())
        capped = {"shop": RateLimit(1000, 1000, max_concurrent=1)}
        gw = await _gateway(started, table, namespace_quotas=capped)
        async with session() as client, asyncio.TaskGroup() as tg:
            held = tg.create_task(fetch(client, gw.addresses[0], host="shop.test"))
            await eventually(lambda: gw.ctx.limits.in_flight("shop/web:80") == 1)
            # Lifted while a request is in flight, then set again: the request in flight
            # (admitted under the old cap) no longer counts, so one new request fits.
            gw.ctx.limits.configure(Thresholds(), {})
            gw.ctx.limits.configure(Thresholds(), capped)
            status, _ = await fetch(client, gw.addresses[0], host="shop.test")
        assert status == 200
        assert held.result()[0] == 200
