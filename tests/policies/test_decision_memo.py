"""The table's memos: the decisions a rule keeps are those made afresh, built once;
`decide_path` settles a request by host and path exactly when nothing else could change it."""

from __future__ import annotations

import gc

from hypothesis import given, settings
from hypothesis import strategies as st

from policies import acyclic, matching
from policies.matching import Decision, Forward, RequestHead
from policies.model import (
    BackendRef,
    Filter,
    FilterKind,
    RequestRedirect,
    Route,
    SessionAffinity,
    TrafficSettings,
    URLRewrite,
)
from tests.policies.routing_builders import (
    API,
    HOST,
    WEB,
    compile_routes,
    head,
    header,
    prefix,
    regex,
    route,
    rule,
)
from tests.policies.test_precedence_properties import CLUSTERS, ROLLS, requests, route_sets


def redirect() -> Filter:
    return Filter(FilterKind.REQUEST_REDIRECT, request_redirect=RequestRedirect(hostname="new"))


def test_a_rule_keeps_one_decision_per_backend_and_hands_it_out_for_every_path() -> None:
    table = compile_routes(route("web", ["shop.example.com"], rule(prefix("/"))))
    paths = [f"/item/{i}" for i in range(20)]
    first = [matching.decide(table, head(p), roll=0.5) for p in paths]

    entry = table.lookup("shop.example.com")
    assert entry is not None
    kept = entry.rules[0].settled
    assert kept is not None
    assert len(kept) == 1
    assert all(d is kept[0] for d in first)  # built once, not once per path
    assert entry.rules[0].sole is kept[0]  # the only one: decide reads it without the tuple
    assert isinstance(kept[0], Forward)
    assert (kept[0].path, kept[0].host, kept[0].split) == (None, None, None)  # the request's path
    assert kept[0] == matching.act(entry.rules[0], head("/item/0"), roll=0.9)


def test_a_split_rule_keeps_a_decision_per_backend_and_the_roll_picks_among_them() -> None:
    split = (BackendRef(WEB, weight=3), BackendRef(API, weight=0), BackendRef(API, weight=1))
    table = compile_routes(
        route("split", [HOST], rule(prefix("/split"), backends=split)), clusters=CLUSTERS
    )
    entry = table.lookup(HOST)
    assert entry is not None
    picked = [matching.decide(table, head("/split"), roll=r) for r in (0.0, 0.74, 0.75, 0.999)]
    kept = entry.rules[0].settled
    assert kept is not None
    assert len(kept) == 2  # weight 0 is never picked, so not kept
    assert entry.rules[0].bounds == (3, 4)
    assert entry.rules[0].sole is None  # two to pick from
    assert [d is kept[0] for d in picked] == [True, True, False, False]
    assert all(d is kept[1] for d in picked[2:])
    assert [d.backend.service for d in picked if isinstance(d, Forward)] == [WEB, WEB, API, API]


def test_decisions_that_depend_on_the_request_are_not_kept() -> None:
    sticky = TrafficSettings(affinity=SessionAffinity("Cookie", "sticky"))
    split = (BackendRef(WEB, weight=1), BackendRef(API, weight=1))
    rewrite = Filter(FilterKind.URL_REWRITE, url_rewrite=URLRewrite(hostname="internal"))
    table = compile_routes(
        route("sticky", [HOST], rule(prefix("/sticky"), backends=split, settings=sticky)),
        route("moved", [HOST], rule(prefix("/old"), filters=(redirect(),), backends=())),
        route("rewritten", [HOST], rule(prefix("/new"), filters=(rewrite,))),
        clusters=CLUSTERS,
    )
    decisions = [matching.decide(table, head(p), roll=0.5) for p in ("/sticky", "/old", "/new")]
    entry = table.lookup(HOST)
    assert entry is not None
    assert all(r.settled == () and r.sole is None for r in entry.rules)
    sticky_forward, _, rewritten = decisions
    assert isinstance(sticky_forward, Forward)
    assert sticky_forward.split is next(r for r in entry.rules if r.route_id == "shop/sticky")
    assert isinstance(rewritten, Forward)
    assert (rewritten.path, rewritten.host) == ("/new", "internal")


@settings(max_examples=150, deadline=None)
@given(routes=route_sets(), heads=st.lists(requests, min_size=1, max_size=8))
def test_a_kept_decision_is_the_decision_made_afresh(
    routes: list[Route], heads: list[RequestHead]
) -> None:
    table = compile_routes(*routes, clusters=CLUSTERS)
    for request in heads:
        entry = table.lookup(request.host)
        won = None if entry is None else matching.first_match(entry, request)
        for roll in ROLLS:
            decision = matching.decide(table, request, roll=roll)
            if won is None:
                assert decision is matching.NO_ROUTE
            else:
                assert decision == matching.act(won, request, roll=roll)


@settings(max_examples=150, deadline=None)
@given(routes=route_sets(), heads=st.lists(requests, min_size=1, max_size=8))
def test_a_path_decision_is_the_decision_of_every_request_to_that_path(
    routes: list[Route], heads: list[RequestHead]
) -> None:
    table = compile_routes(*routes, clusters=CLUSTERS)
    for request in heads:
        settled = matching.decide_path(table, request.host, request.path)
        if settled is not None:
            for roll in ROLLS:
                assert matching.decide(table, request, roll=roll) == settled


def test_host_and_path_settle_only_path_only_single_backend_rules() -> None:
    split = (BackendRef(WEB, weight=1), BackendRef(API, weight=1))
    table = compile_routes(
        route("canary", [HOST], rule(prefix("/beta", headers=(header("x-canary", "1"),)))),
        route("split", [HOST], rule(prefix("/split"), backends=split)),
        route("moved", [HOST], rule(prefix("/old"), filters=(redirect(),), backends=())),
        route("files", [HOST], rule(regex("/files/[a-z]+"))),
        route("web", [HOST], rule(prefix("/shop"))),
    )

    def settled(path: str, host: str = HOST) -> Decision | None:
        return matching.decide_path(table, host, path)

    assert settled("/beta/x") is None  # a header can change it
    assert settled("/split") is None  # a roll can
    assert settled("/old/page") is None  # the Location depends on the query and listener
    assert settled("/files/abc") == matching.decide(table, head("/files/abc"), roll=0.5)
    assert settled("/shop/cart") == matching.decide(table, head("/shop/cart"), roll=0.5)
    assert settled("/nothing") is matching.NO_ROUTE
    assert settled("/shop", host="elsewhere.test") is matching.NO_ROUTE
    assert (HOST, "/beta/x") in table.path_decisions  # undecidable answers are memoized too


def test_the_path_memo_stays_bounded() -> None:
    table = compile_routes(route("web", [HOST], rule(prefix("/"))))
    for i in range(matching.DECISION_MEMO_SIZE + 10):
        matching.decide_path(table, HOST, f"/item/{i}")
    assert len(table.path_decisions) <= matching.DECISION_MEMO_SIZE


def test_a_table_keeping_decisions_is_freed_by_reference_counting_alone() -> None:
    """The memos must not make the table cyclic: a gateway keeps its tables out of the cycle
    collector's scans (`gateway.tables_heap`), so a cycle would keep a replaced table forever."""
    split = (BackendRef(WEB, weight=1), BackendRef(API, weight=1))
    sticky = TrafficSettings(affinity=SessionAffinity("Header", "x-user"))
    table = compile_routes(
        route("web", [HOST], rule(prefix("/shop"))),
        route("split", [HOST], rule(prefix("/split"), backends=split)),
        route("sticky", [HOST], rule(prefix("/sticky"), backends=split, settings=sticky)),
        route("moved", [HOST], rule(prefix("/old"), filters=(redirect(),), backends=())),
    )
    for path in ("/shop/a", "/shop/a", "/split", "/sticky", "/old", "/none"):
        matching.decide(table, head(path), roll=0.5)
        matching.decide_path(table, HOST, path)
    entry = table.lookup(HOST)
    assert entry is not None
    assert any(r.settled for r in entry.rules)
    del entry
    with acyclic.paused_collector():
        gc.collect()
        tracked = len(gc.get_objects())
        del table
        unreachable = gc.collect()  # counts objects that only the collector could free
        assert unreachable == 0
        assert len(gc.get_objects()) < tracked - 10  # the table's objects are gone
