"""Incremental compile: after any sequence of inventory changes, the same table (and the same
bytes) as compiling from scratch."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from policies import snapshot
from policies.incremental import Compiler
from policies.model import (
    BackendRef,
    ClusterWeight,
    Filter,
    FilterKind,
    HealthCheck,
    PolicySet,
    RequestMirror,
    RequestRedirect,
    ServiceRef,
    UpstreamTLS,
)
from policies.table import Endpoint, Inventory, compile_table
from tests.policies.routing_builders import (
    API,
    HOST,
    WEB,
    cluster,
    exact,
    prefix,
    request_headers,
    route,
    rule,
)

DB = ServiceRef("shop", "db", 5432)
OTHER = ServiceRef("other", "web", 80)  # another namespace, no grant: refused
SERVICES = (WEB, API, DB, OTHER)
CLUSTERS = (
    cluster("east", subnet=1, labels={"region": "eu", "topology.kubernetes.io/zone": "e1"}),
    dataclasses.replace(
        cluster("west", subnet=2, priority=1, labels={"region": "us"}),
        tls=UpstreamTLS(server_name="west.shop"),
        health_check=HealthCheck(path="/ready"),
    ),
    cluster("north", subnet=3, weight=2, labels={"region": "eu"}),
    cluster("idle", subnet=4, weight=0),
)


def policies() -> PolicySet:
    mirror = Filter(FilterKind.REQUEST_MIRROR, request_mirror=RequestMirror(DB, percent=10.0))
    redirect = Filter(FilterKind.REQUEST_REDIRECT, request_redirect=RequestRedirect(port=8443))
    routes = (
        route(
            "main",
            [HOST, "*.example.com"],
            rule(
                prefix("/api"),
                exact("/api/x"),  # two candidates sharing one backends tuple
                backends=(
                    BackendRef(WEB, weight=3),
                    BackendRef(API, filters=(request_headers(set=(("x-a", "1"),)), mirror)),
                    BackendRef(WEB, cluster_selector={"region": "eu"}),
                    BackendRef(
                        API, clusters=(ClusterWeight("west", 2), ClusterWeight("east", 1, 0))
                    ),
                    BackendRef(DB, kind="Unknown"),
                    BackendRef(OTHER),
                    BackendRef(WEB, filters=(redirect,)),
                ),
                filters=(mirror,),
            ),
            rule(prefix("/"), backends=(BackendRef(WEB), BackendRef(DB, weight=0))),
        ),
        route("db", ["db.example.com"], rule(prefix("/"), backends=(BackendRef(DB),))),
        # Two names with the same routes share one index entry (rebuilt once).
        route("pair", ["a1.test", "b1.test"], rule(prefix("/"), backends=(BackendRef(API),))),
        route("any", [], rule(prefix("/"), backends=(BackendRef(API, weight=2),))),
    )
    return PolicySet(routes=routes, clusters=CLUSTERS)


ENDPOINTS = st.lists(
    st.builds(
        Endpoint,
        host=st.sampled_from(["127.0.9.1", "127.0.9.2", "127.0.9.3"]),
        port=st.sampled_from([80, 8080]),
        cluster=st.just("c"),
        zone=st.sampled_from([None, "z1"]),
        ready=st.booleans(),
    ),
    max_size=3,
).map(tuple)

KEYS = [(c.name, s) for c in CLUSTERS for s in SERVICES]
INVENTORIES = st.dictionaries(st.sampled_from(KEYS), ENDPOINTS, max_size=len(KEYS))


def as_inventory(found: dict[tuple[str, ServiceRef], tuple[Endpoint, ...]]) -> Inventory:
    return Inventory(
        {
            key: tuple(dataclasses.replace(e, cluster=key[0]) for e in endpoints)
            for key, endpoints in found.items()
        }
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(INVENTORIES, st.booleans()), min_size=1, max_size=6))
def test_incremental_compiles_equal_full_compiles(
    steps: list[tuple[dict[tuple[str, ServiceRef], tuple[Endpoint, ...]], bool]],
) -> None:
    compiler = Compiler()
    current = policies()
    for version, (found, new_policies) in enumerate(steps, start=1):
        if new_policies:
            current = policies()  # equal content in a new object: compiled from scratch
        inventory = as_inventory(found)
        compiled = compiler.compile(current, inventory, version=version)
        full = compile_table(current, inventory, version=version)
        assert compiled.table == full
        assert snapshot.encode(compiled.table, compiled.parts) == snapshot.encode(full)


def test_an_endpoint_change_re_resolves_only_the_spreads_over_that_service() -> None:
    compiler = Compiler()
    current = policies()
    first = {key: (Endpoint("127.0.9.1", 80, key[0]),) for key in KEYS}
    compiler.compile(current, Inventory(first), version=1)
    unchanged = compiler.compile(current, Inventory(first), version=2)
    assert unchanged.changed == frozenset()
    changed = dict(first)
    changed[("east", DB)] = (Endpoint("127.0.9.2", 80, "east"),)
    compiled = compiler.compile(current, Inventory(changed), version=3)
    assert compiled.changed == frozenset({"shop/db:5432"})
    assert compiled.table == compile_table(current, Inventory(changed), version=3)
    assert compiled.table.backends["shop/web:80"] is unchanged.table.backends["shop/web:80"]
    # A cluster losing the service altogether: still only the spreads over it.
    fewer = {key: found for key, found in changed.items() if key != ("west", DB)}
    compiled = compiler.compile(current, Inventory(fewer), version=4)
    assert compiled.changed == frozenset({"shop/db:5432"})
    assert compiled.table == compile_table(current, Inventory(fewer), version=4)


def test_a_spread_that_stops_resolving_is_a_full_compile() -> None:
    compiler = Compiler()
    current = policies()
    first = {key: (Endpoint("127.0.9.1", 80, key[0]),) for key in KEYS}
    compiler.compile(current, Inventory(first), version=1)
    gone = {key: found for key, found in first.items() if key[1] != DB}
    compiled = compiler.compile(current, Inventory(gone), version=2)
    assert compiled.changed is None
    assert compiled.table == compile_table(current, Inventory(gone), version=2)
    # Other refusals are other inputs: also from scratch.
    refused = frozenset({("shop/db", DB)})
    assert compiler.compile(current, Inventory(gone), version=3, refused=refused).changed is None


def test_a_change_in_a_cluster_a_spread_leaves_out_keeps_that_spread() -> None:
    compiler = Compiler()
    current = policies()
    first = {key: (Endpoint("127.0.9.1", 80, key[0]),) for key in KEYS}
    before = compiler.compile(current, Inventory(first), version=1).table
    north = dict(first)
    north[("north", API)] = (Endpoint("127.0.9.3", 80, "north"),)
    compiled = compiler.compile(current, Inventory(north), version=2)
    assert compiled.table == compile_table(current, Inventory(north), version=2)
    over_api = {bid for bid, b in before.backends.items() if b.service == API}
    pinned = {
        bid for bid in over_api if "north" not in {t.cluster for t in before.backends[bid].targets}
    }
    assert pinned  # the spread over API in west and east only
    assert compiled.changed == frozenset(over_api - pinned)
    for bid in pinned:
        assert compiled.table.backends[bid] is before.backends[bid]
