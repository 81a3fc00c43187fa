"""Session affinity on a real gateway: a client keeps its cluster and endpoint as weights change."""

from __future__ import annotations

import aiohttp

from fleetgate.demo_backend import BackendSpec, DemoBackend
from gateway.server import Gateway
from policies import cohorts
from policies.model import (
    Algorithm,
    BackendRef,
    ClusterWeight,
    SessionAffinity,
    TrafficSettings,
)
from policies.table import RoutingTable
from tests.gateway import tables
from tests.gateway.conftest import EAST, EAST_2, WEST, StartGateway
from tests.gateway.fleet import Backends, cluster, fetch, fleet_table, session

COOKIE = TrafficSettings(
    algorithm=Algorithm.RING_HASH, affinity=SessionAffinity("Cookie", "session", ttl_s=3600)
)
HEADER = TrafficSettings(
    algorithm=Algorithm.RING_HASH, affinity=SessionAffinity("Header", "x-user")
)
USERS = 40


def _split(
    backends: list[DemoBackend], east: int, west: int, settings: TrafficSettings
) -> RoutingTable:
    east_addresses = [b.address for b in backends if b.spec.cluster == "east"]
    west_addresses = [b.address for b in backends if b.spec.cluster == "west"]
    ref = tables.ref(clusters=[ClusterWeight("east", east), ClusterWeight("west", west)])
    clusters = [
        cluster("east", east_addresses, check=None),
        cluster("west", west_addresses, check=None),
    ]
    return fleet_table(clusters, settings, [ref])


async def _where(
    client: aiohttp.ClientSession, gw: Gateway, headers: dict[str, str]
) -> tuple[str, str]:
    status, answer = await fetch(client, gw.addresses[0], headers=headers)
    assert status == 200
    return answer["x-cluster"], answer["x-pod"]


async def _four(backends: Backends) -> list[DemoBackend]:
    hosts = (("east", EAST), ("east", EAST_2), ("west", WEST), ("west", "127.0.2.2"))
    return [await backends.start(name, host) for name, host in hosts]


async def test_a_new_client_gets_a_cookie_and_keeps_its_endpoint_while_weights_change(
    gateway: StartGateway,
) -> None:
    async with Backends() as backends:
        pods = await _four(backends)
        gw = await gateway(_split(pods, 1, 1, COOKIE))
        async with session() as client:
            status, headers = await fetch(client, gw.addresses[0])
            assert status == 200
            assert headers["set-cookie"].startswith("session=")
            assert "HttpOnly" in headers["set-cookie"]
            assert "Max-Age=3600" in headers["set-cookie"]
            users = [{"cookie": f"session=user-{n}"} for n in range(USERS)]
            before = [await _where(client, gw, user) for user in users]
            assert {place[0] for place in before} == {"east", "west"}
            assert before == [await _where(client, gw, user) for user in users]  # stable
            gw.swap(_split(pods, 3, 1, COOKIE))  # east's share grows from 50 % to 75 %
            after = [await _where(client, gw, user) for user in users]
    moved = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    # Only clients of the shrinking cluster move, and each one that stays keeps its endpoint.
    assert all(b[0] == "west" and a[0] == "east" for b, a in moved)
    assert len(moved) < USERS // 2


async def test_a_header_hash_keeps_each_user_on_one_endpoint(gateway: StartGateway) -> None:
    async with Backends() as backends:
        pods = await _four(backends)
        gw = await gateway(_split(pods, 1, 1, HEADER))
        async with session() as client:
            places = {}
            for n in range(USERS):
                user = {"x-user": f"u{n}"}
                first = await _where(client, gw, user)
                assert all([await _where(client, gw, user) == first for _ in range(3)])
                places[n] = first
            status, headers = await fetch(client, gw.addresses[0])  # no header: balanced
            assert status == 200
            assert "set-cookie" not in headers
    assert len(set(places.values())) == 4  # users spread over every endpoint


async def test_sticky_cohorts_follow_the_canary_weight_and_never_move_back(
    gateway: StartGateway,
) -> None:
    cookie = TrafficSettings(affinity=SessionAffinity("Cookie", cohorts.DEFAULT_COOKIE))
    async with Backends() as backends:
        stable = await backends.start("east", EAST)
        canary = DemoBackend(BackendSpec("east", version="v2", host=EAST_2, service="web-canary"))
        await canary.start()
        backends.started.append(canary)
        east = tables.member(
            "east",
            {
                tables.service("web"): [stable.address],
                tables.service("web-canary"): [canary.address],
            },
        )

        def weighted(percent: int) -> RoutingTable:
            refs = (
                BackendRef(tables.service("web-canary"), weight=percent),
                BackendRef(tables.service("web"), weight=100 - percent),
            )
            return tables.table([east], [tables.rule(*refs, settings=cookie)])

        gw = await gateway(weighted(10))
        keys = [f"k{n}" for n in range(USERS)]
        route = gw.table.any_host or next(iter(gw.table.hosts.values()))
        salt = route.rules[0].route_id
        async with session() as client:
            for percent in (10, 50):
                if percent != 10:
                    gw.swap(weighted(percent))
                for key in keys:
                    headers = {"cookie": f"{cohorts.DEFAULT_COOKIE}={key}"}
                    status, answer = await fetch(client, gw.addresses[0], headers=headers)
                    assert status == 200
                    expected = "v2" if cohorts.in_canary(key, percent, salt=salt) else "v1"
                    assert answer["x-version"] == expected
