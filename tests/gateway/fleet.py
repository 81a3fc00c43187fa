"""A small fleet on loopback for resilience tests: demo backends per cluster, tables, a client."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import aiohttp

from fleetgate.demo_backend import BackendSpec, DemoBackend
from policies.model import BackendRef, HealthCheck, MemberCluster, TrafficSettings
from policies.table import RoutingTable
from tests.gateway import tables

FAST_CHECK = HealthCheck(
    path="/healthz",
    interval_s=0.05,
    timeout_s=2.0,  # generous: a loaded test machine must not fail a probe by slowness
    jitter_percent=10.0,
    unhealthy_threshold=2,
    healthy_threshold=2,
)


def cluster(
    name: str,
    addresses: Sequence[str],
    *,
    priority: int = 0,
    weight: int = 1,
    check: HealthCheck | None = FAST_CHECK,
) -> MemberCluster:
    member = tables.member(
        name, {tables.service(): list(addresses)}, priority=priority, weight=weight
    )
    return dataclasses.replace(member, health_check=check)


def fleet_table(
    clusters: Sequence[MemberCluster],
    settings: TrafficSettings | None = None,
    refs: Sequence[BackendRef] = (),
) -> RoutingTable:
    rule = tables.rule(*(refs or (tables.ref(),)), settings=settings)
    return tables.table(clusters, [rule])


class Backends:
    """Demo backends started by a test, stopped after it."""

    def __init__(self) -> None:
        self.started: list[DemoBackend] = []

    async def start(self, cluster: str, host: str) -> DemoBackend:
        backend = DemoBackend(BackendSpec(cluster=cluster, host=host))
        await backend.start()
        self.started.append(backend)
        return backend

    async def close(self) -> None:
        for backend in self.started:
            await backend.stop()

    async def __aenter__(self) -> Backends:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def session() -> aiohttp.ClientSession:
    """A client that never hangs a test: 10 s per request at most."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))


async def fetch(
    session: aiohttp.ClientSession,
    address: tuple[str, int],
    path: str = "/",
    *,
    method: str = "GET",
    host: str = "shop.test",
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> tuple[int, dict[str, str]]:
    """One request through the gateway: (status, response headers lower-cased)."""
    url = f"http://{address[0]}:{address[1]}{path}"
    async with session.request(
        method, url, headers={"Host": host, **(headers or {})}, data=data
    ) as response:
        await response.read()
        return response.status, {k.lower(): v for k, v in response.headers.items()}
