"""Policy decisions on live traffic: matching, filters, redirects, rewrites, mirrors, weights,
header pins, per-cluster weights and failover tiers, through real sockets."""

from __future__ import annotations

import asyncio
import collections
import dataclasses

from gateway.server import Gateway
from policies.model import (
    ClusterWeight,
    Filter,
    FilterKind,
    HeaderMatch,
    HeaderModifier,
    Match,
    PathKind,
    PathMatch,
    PathModifier,
    PathModifierKind,
    RequestMirror,
    RequestRedirect,
    URLRewrite,
)
from policies.table import Endpoint, RoutingTable
from tests.conftest import RefusingPort, eventually
from tests.fakes.upstream import SeenRequest, ok
from tests.gateway import tables, wire
from tests.gateway.conftest import EAST, MIRROR, TEST_SETTINGS, WEST, StartGateway, StartRaw


def _named(name: str) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(name), name.encode())


async def _bodies(address: tuple[str, int], requests: list[bytes], conns: int = 4) -> list[bytes]:
    """Send `requests` pipelined over `conns` connections in batches; return the bodies."""

    async def run(part: list[bytes]) -> list[bytes]:
        conn = await wire.Conn.open(address)
        out: list[bytes] = []
        for i in range(0, len(part), 50):
            batch = part[i : i + 50]
            conn.send(b"".join(batch), responses=len(batch))
            out += [r.body for r in await conn.responses(len(batch))]
        await conn.close()
        return out

    parts = [requests[i::conns] for i in range(conns)]
    results = await asyncio.gather(*(run(p) for p in parts))
    return [body for part in results for body in part]


async def test_host_and_path_pick_the_rule(raw_upstream: StartRaw, gateway: StartGateway) -> None:
    api = await raw_upstream(lambda req: _named("api"), host=EAST)
    web = await raw_upstream(lambda req: _named("web"), host=WEST)
    clusters = [
        tables.member("east", {tables.service("api"): [api.address]}),
        tables.member("west", {tables.service("web"): [web.address]}),
    ]
    rules = [
        tables.rule(
            tables.ref(tables.service("api")),
            matches=[Match(path=PathMatch(PathKind.PREFIX, "/api"))],
        ),
        tables.rule(tables.ref(tables.service("web"))),
    ]
    gw = await gateway(tables.table(clusters, rules))
    bodies = await _bodies(
        gw.addresses[0],
        [wire.get("/api/cart"), wire.get("/api"), wire.get("/apix"), wire.get("/")],
        conns=1,
    )
    other_host = await _bodies(gw.addresses[0], [wire.get("/api", host="nope.test")], conns=1)
    assert bodies == [b"api", b"api", b"web", b"web"]
    assert other_host == [b"no_route\n"]


async def test_header_modifiers_on_request_and_response(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    answer = b"HTTP/1.1 200 OK\r\nServer: secret/1.0\r\nX-Kept: 1\r\nContent-Length: 0\r\n\r\n"
    upstream = await raw_upstream(lambda req: answer)
    filters = [
        Filter(
            FilterKind.REQUEST_HEADER_MODIFIER,
            request_header_modifier=HeaderModifier(
                set=(("x-env", "prod"),), add=(("x-tag", "added"),), remove=("x-drop",)
            ),
        ),
        Filter(
            FilterKind.RESPONSE_HEADER_MODIFIER,
            response_header_modifier=HeaderModifier(
                set=(("x-served-by", "fleetgate"),), remove=("server",)
            ),
        ),
    ]
    cluster = tables.member("east", {tables.service(): [upstream.address]})
    gw = await gateway(tables.table([cluster], [tables.rule(tables.ref(), filters=filters)]))
    conn = await wire.Conn.open(gw.addresses[0])
    response = await conn.request(
        wire.get("/", extra="X-Env: dev\r\nX-Drop: me\r\nX-Tag: original\r\n")
    )
    await conn.close()
    seen = upstream.requests[0]
    assert seen.values("x-env") == [b"prod"]
    assert seen.values("x-drop") == []
    assert seen.values("x-tag") == [b"original,added"]
    assert response.header("server") is None
    assert response.header("x-served-by") == b"fleetgate"
    assert response.header("x-kept") == b"1"


async def test_redirect_is_a_local_reply_with_location(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok())
    redirect = Filter(
        FilterKind.REQUEST_REDIRECT,
        request_redirect=RequestRedirect(scheme="https", status=301),
    )
    cluster = tables.member("east", {tables.service(): [upstream.address]})
    gw = await gateway(tables.table([cluster], [tables.rule(filters=[redirect])]))
    conn = await wire.Conn.open(gw.addresses[0])
    response = await conn.request(wire.get("/old/page?x=1"))
    after = await conn.request(wire.get("/again"))  # keep-alive survives a redirect
    await conn.close()
    assert response.status == 301
    assert response.header("location") == b"https://shop.test/old/page?x=1"
    assert response.body == b""
    assert after.status == 301
    assert upstream.requests == []


async def test_url_rewrite_changes_path_and_host(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok())
    rewrite = Filter(
        FilterKind.URL_REWRITE,
        url_rewrite=URLRewrite(
            hostname="internal.test", path=PathModifier(PathModifierKind.PREFIX, "/v2")
        ),
    )
    cluster = tables.member("east", {tables.service(): [upstream.address]})
    rule = tables.rule(
        tables.ref(), matches=[Match(path=PathMatch(PathKind.PREFIX, "/api"))], filters=[rewrite]
    )
    gw = await gateway(tables.table([cluster], [rule]))
    conn = await wire.Conn.open(gw.addresses[0])
    await conn.request(wire.get("/api/items?page=2"))
    await conn.close()
    seen = upstream.requests[0]
    assert seen.target == b"/v2/items?page=2"
    assert seen.values("host") == [b"internal.test"]
    assert seen.values("x-forwarded-host") == [b"shop.test"]


def _mirror_table(main: str, shadow: str) -> RoutingTable:
    clusters = [
        tables.member("east", {tables.service(): [main]}),
        tables.member("shadow", {tables.service("shadow"): [shadow]}),
    ]
    mirror = Filter(
        FilterKind.REQUEST_MIRROR,
        request_mirror=RequestMirror(backend=tables.service("shadow"), percent=100.0),
    )
    rule = tables.rule(tables.ref(clusters=[ClusterWeight("east")]), filters=[mirror])
    return tables.table(clusters, [rule])


async def test_mirror_receives_copies_within_the_body_cap(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    main = await raw_upstream(ok(b"main"), host=EAST)
    shadow = await raw_upstream(ok(b"shadow"), host=MIRROR)
    gw = await gateway(_mirror_table(main.address, shadow.address))
    conn = await wire.Conn.open(gw.addresses[0])
    small = b"POST /small HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 4\r\n\r\nabcd"
    big_body = b"b" * (TEST_SETTINGS.mirror_max_body_bytes + 1)
    big = b"POST /big HTTP/1.1\r\nHost: shop.test\r\nContent-Length: %d\r\n\r\n" % len(big_body)
    chunked = (
        b"POST /chunked HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nxyz\r\n0\r\n\r\n"
    )
    responses = [
        await conn.request(wire.get("/get?q=1")),
        await conn.request(small),
        await conn.request(big + big_body),
        await conn.request(chunked),
    ]
    await conn.close()
    assert [r.body for r in responses] == [b"main"] * 4
    await eventually(lambda: len(shadow.requests) == 3)
    by_target = {r.target: r for r in shadow.requests}
    assert set(by_target) == {b"/get?q=1", b"/small", b"/chunked"}
    assert by_target[b"/small"].body == b"abcd"
    assert by_target[b"/chunked"].body == b"xyz"
    assert by_target[b"/get?q=1"].values("host") == [b"shop.test"]
    assert gw.counters.mirror_dropped == 1
    await eventually(lambda: not gw.ctx.mirrors.inflight)


async def test_dead_mirror_does_not_affect_the_real_request(
    raw_upstream: StartRaw, gateway: StartGateway, refusing_port: RefusingPort
) -> None:
    main = await raw_upstream(ok(b"main"), host=EAST)
    gw = await gateway(_mirror_table(main.address, f"{MIRROR}:{refusing_port(MIRROR)}"))
    bodies = await _bodies(gw.addresses[0], [wire.get(f"/{i}") for i in range(20)], conns=2)
    assert bodies == [b"main"] * 20
    await eventually(lambda: gw.counters.mirror_failed == 20)
    assert gw.counters.local_replies["upstream_connect_failed"] == 0


async def test_hanging_mirror_does_not_delay_the_real_request(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    main = await raw_upstream(ok(b"main"), host=EAST)
    shadow = await raw_upstream(lambda req: None, host=MIRROR)  # never answers
    gw = await gateway(_mirror_table(main.address, shadow.address), mirror_timeout_s=0.2)
    bodies = await _bodies(gw.addresses[0], [wire.get(f"/{i}") for i in range(5)], conns=1)
    assert bodies == [b"main"] * 5
    await eventually(lambda: gw.counters.mirror_failed == 5)  # given up at their deadline
    assert not gw.ctx.mirrors.inflight


async def test_weighted_backends_split_within_tolerance(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    stable = await raw_upstream(lambda req: _named("stable"), host=EAST)
    canary = await raw_upstream(lambda req: _named("canary"), host=WEST)
    cluster = tables.member(
        "east",
        {tables.service("stable"): [stable.address], tables.service("canary"): [canary.address]},
    )
    rule = tables.rule(
        tables.ref(tables.service("stable"), weight=3),
        tables.ref(tables.service("canary"), weight=1),
    )
    gw = await gateway(tables.table([cluster], [rule]))
    total = 2000
    counts = collections.Counter(await _bodies(gw.addresses[0], [wire.get()] * total))
    # 75 % ± 4 percentage points is about four standard deviations at n = 2000
    assert abs(counts[b"stable"] / total - 0.75) < 0.04
    assert counts[b"stable"] + counts[b"canary"] == total


async def test_header_pinned_backend(raw_upstream: StartRaw, gateway: StartGateway) -> None:
    stable = await raw_upstream(lambda req: _named("stable"), host=EAST)
    canary = await raw_upstream(lambda req: _named("canary"), host=WEST)
    cluster = tables.member(
        "east",
        {tables.service("stable"): [stable.address], tables.service("canary"): [canary.address]},
    )
    rules = [
        tables.rule(
            tables.ref(tables.service("canary")),
            matches=[Match(headers=(HeaderMatch("x-canary", "always"),))],
        ),
        tables.rule(tables.ref(tables.service("stable"))),
    ]
    gw = await gateway(tables.table([cluster], rules))
    pinned = wire.get(extra="X-Canary: always\r\n")
    bodies = await _bodies(gw.addresses[0], [pinned, wire.get(), pinned, wire.get()], conns=1)
    assert bodies == [b"canary", b"stable", b"canary", b"stable"]


async def test_per_cluster_weights(raw_upstream: StartRaw, gateway: StartGateway) -> None:
    east = await raw_upstream(lambda req: _named("east"), host=EAST)
    west = await raw_upstream(lambda req: _named("west"), host=WEST)
    clusters = [
        tables.member("east", {tables.service(): [east.address]}),
        tables.member("west", {tables.service(): [west.address]}),
    ]
    spread = tables.ref(clusters=[ClusterWeight("east", 1), ClusterWeight("west", 3)])
    gw = await gateway(tables.table(clusters, [tables.rule(spread)]))
    total = 2000
    counts = collections.Counter(await _bodies(gw.addresses[0], [wire.get()] * total))
    assert abs(counts[b"west"] / total - 0.75) < 0.04


@dataclasses.dataclass
class _Health:
    """A health view that a test flips: the protocol the health checker will implement."""

    down: set[str]
    version: int = 0

    def healthy(self, endpoint: Endpoint) -> bool:
        return endpoint.cluster not in self.down

    def mark_down(self, cluster: str) -> None:
        self.down.add(cluster)
        self.version += 1


async def test_failover_to_the_next_tier_when_the_first_is_unhealthy(
    raw_upstream: StartRaw,
) -> None:
    east = await raw_upstream(lambda req: _named("east"), host=EAST)
    west = await raw_upstream(lambda req: _named("west"), host=WEST)
    clusters = [
        tables.member("east", {tables.service(): [east.address]}, priority=0),
        tables.member("west", {tables.service(): [west.address]}, priority=1),
    ]
    health = _Health(set())
    gw = Gateway(TEST_SETTINGS, tables.table(clusters, [tables.rule(tables.ref())]), health=health)
    await gw.start()
    try:
        before = await _bodies(gw.addresses[0], [wire.get()] * 20, conns=1)
        health.mark_down("east")
        after = await _bodies(gw.addresses[0], [wire.get()] * 20, conns=1)
    finally:
        await gw.close()
    assert set(before) == {b"east"}
    assert set(after) == {b"west"}


async def test_swap_keeps_requests_in_flight_on_their_table(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    held: list[SeenRequest] = []
    old = await raw_upstream(lambda req: held.append(req), host=EAST)
    new = await raw_upstream(lambda req: _named("new"), host=WEST)
    gw = await gateway(tables.single(old.address))
    conn = await wire.Conn.open(gw.addresses[0])
    conn.send(wire.get("/slow"))
    await eventually(lambda: len(held) == 1)
    gw.swap(tables.single(new.address))
    held[0].answer(_named("old"))
    in_flight = await conn.response()
    after = await conn.request(wire.get("/next"))
    await conn.close()
    assert (in_flight.body, after.body) == (b"old", b"new")
