"""Properties of the routing core: order independence, precedence, weights, wire round trip."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from policies import matching, snapshot, table
from policies.matching import RequestHead
from policies.model import (
    BackendRef,
    Filter,
    FilterKind,
    HeaderMatch,
    Match,
    PathKind,
    PathMatch,
    QueryMatch,
    Route,
    RouteKind,
    Rule,
    ServiceRef,
    URLRewrite,
)
from policies.table import Backend
from tests.policies.routing_builders import API, EAST, WEB, WEST, cluster, compile_routes

GONE = ServiceRef("shop", "gone", 80)
HOSTNAMES = ("a.example.com", "b.example.com", "*.example.com", "*.b.example.com")
HOSTS = ("a.example.com", "b.example.com", "x.b.example.com", "y.example.com", "other.test")
PATHS = ("/", "/api", "/api/", "/api/v1", "/api/v1/x", "/web", "/apix", "/web/")
CLUSTERS = (EAST, WEST, cluster("south", subnet=3, priority=2, services=(API,)))

paths = st.one_of(
    st.builds(PathMatch, st.just(PathKind.EXACT), st.sampled_from(PATHS)),
    st.builds(PathMatch, st.just(PathKind.PREFIX), st.sampled_from(PATHS)),
    st.builds(PathMatch, st.just(PathKind.REGEX), st.sampled_from(("/api/.*", "/.*", "/web"))),
)
matches = st.builds(
    Match,
    path=paths,
    headers=st.lists(
        st.sampled_from((HeaderMatch("x-a", "1"), HeaderMatch("x-b", "2"))), unique=True, max_size=2
    ).map(tuple),
    query_params=st.lists(st.sampled_from((QueryMatch("q", "1"),)), max_size=1).map(tuple),
    method=st.sampled_from((None, "GET", "POST")),
)
backend_refs = st.lists(
    st.builds(BackendRef, st.sampled_from((WEB, API, GONE)), weight=st.integers(0, 3)),
    max_size=2,
).map(tuple)
rewrites = st.lists(
    st.just(Filter(FilterKind.URL_REWRITE, url_rewrite=URLRewrite(hostname="up"))), max_size=1
).map(tuple)
rules = st.builds(
    Rule,
    name=st.none(),
    matches=st.lists(matches, max_size=2).map(tuple),
    filters=rewrites,
    backend_refs=backend_refs,
)


@st.composite
def route_sets(draw: st.DrawFn) -> list[Route]:
    """Routes with unique ids whose hostnames, paths and creation times often collide."""
    count = draw(st.integers(1, 6))
    out = []
    for i in range(count):
        out.append(
            Route(
                kind=draw(st.sampled_from(RouteKind)),
                namespace=draw(st.sampled_from(("shop", "blog"))),
                name=f"r{i}",
                hostnames=tuple(
                    draw(st.lists(st.sampled_from(HOSTNAMES), unique=True, max_size=2))
                ),
                rules=tuple(draw(st.lists(rules, min_size=1, max_size=3))),
                created=draw(st.integers(0, 2)),
            )
        )
    return out


requests = st.builds(
    RequestHead,
    method=st.sampled_from(("GET", "POST")),
    host=st.sampled_from(HOSTS),
    path=st.sampled_from(PATHS),
    query=st.sampled_from(("", "q=1", "q=2&q=1")),
    headers=st.dictionaries(st.sampled_from(("x-a", "x-b")), st.sampled_from(("1", "2"))),
)
ROLLS = (0.0, 0.3, 0.5, 0.7, 0.999)


@settings(max_examples=150, deadline=None)
@given(routes=route_sets(), data=st.data(), heads=st.lists(requests, min_size=1, max_size=8))
def test_document_order_never_changes_a_decision(
    routes: list[Route], data: st.DataObject, heads: list[RequestHead]
) -> None:
    # Input order is shuffled, `created` stays fixed (it is a tie-break, not an input order),
    # and so do the hostnames' order within a route and the clusters' order.
    shuffled = [
        Route(
            r.kind,
            r.namespace,
            r.name,
            tuple(data.draw(st.permutations(r.hostnames))),
            r.rules,
            r.created,
        )
        for r in data.draw(st.permutations(routes))
    ]
    clusters = data.draw(st.permutations(CLUSTERS))
    one = compile_routes(*routes, clusters=CLUSTERS)
    two = compile_routes(*shuffled, clusters=clusters, version=2)
    assert one.checksum == two.checksum
    for head in heads:
        for roll in ROLLS:
            assert matching.decide(one, head, roll=roll) == matching.decide(two, head, roll=roll)


@settings(max_examples=150, deadline=None)
@given(routes=route_sets())
def test_every_entry_is_in_precedence_order(routes: list[Route]) -> None:
    compiled = compile_routes(*routes, clusters=CLUSTERS)
    entries = [*compiled.hosts.items(), *(("*" + s, e) for s, e in compiled.wildcards)]
    if compiled.any_host is not None:
        entries.append(("", compiled.any_host))
    for host, entry in entries:
        keys = [table.precedence_key(rule, host) for rule in entry.rules]
        assert None not in keys
        sort_keys = [k.sort_key() for k in keys if k is not None]
        assert sort_keys == sorted(sort_keys)


@settings(max_examples=150, deadline=None)
@given(routes=route_sets(), heads=st.lists(requests, min_size=1, max_size=8))
def test_the_winner_is_the_first_candidate(routes: list[Route], heads: list[RequestHead]) -> None:
    compiled = compile_routes(*routes, clusters=CLUSTERS)
    for head in heads:
        entry = compiled.lookup(head.host)
        winner = None if entry is None else matching.first_match(entry, head)
        found = [] if entry is None else matching.candidates(entry, head)
        assert winner is (found[0] if found else None)


@settings(max_examples=200, deadline=None)
@given(weights=st.lists(st.integers(0, 1000), min_size=1, max_size=6).filter(any))
def test_weights_converge_to_their_shares(weights: list[int]) -> None:
    backends = tuple(Backend(f"b{i}", WEB, w, ()) for i, w in enumerate(weights))
    total = sum(weights)
    grid = 10_000
    counts = dict.fromkeys(range(len(weights)), 0)
    for k in range(grid):
        chosen = matching.pick_backend(backends, total, k / grid)
        assert chosen is not None
        counts[int(chosen.id[1:])] += 1
    for i, weight in enumerate(weights):
        # Rolls on a grid of step 1/grid: each share is exact to within one roll.
        assert abs(counts[i] - grid * weight / total) <= 1
        if weight == 0:
            assert counts[i] == 0


@settings(max_examples=100, deadline=None)
@given(routes=route_sets())
def test_snapshot_round_trip(routes: list[Route]) -> None:
    compiled = compile_routes(*routes, clusters=CLUSTERS, version=5)
    wire = json.loads(json.dumps(snapshot.dump(compiled)))
    assert snapshot.load(wire) == compiled
