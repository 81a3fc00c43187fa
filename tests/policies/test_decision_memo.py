"""The table's memos: path-only decisions give fresh decisions' answers and stay bounded;
`decide_path` settles a request by host and path exactly when nothing else could change it."""

from __future__ import annotations

import gc

from hypothesis import given, settings
from hypothesis import strategies as st

from policies import acyclic, matching
from policies.matching import Decision, Forward, RequestHead
from policies.model import BackendRef, Filter, FilterKind, RequestRedirect, Route
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


def test_memoized_decisions_equal_fresh_ones_and_the_memo_stays_bounded() -> None:
    table = compile_routes(route("web", ["shop.example.com"], rule(prefix("/"))))
    paths = [f"/item/{i}" for i in range(matching.RULE_MEMO_SIZE + 10)]
    first = [matching.decide(table, head(p), roll=0.5) for p in paths]

    entry = table.lookup("shop.example.com")
    assert entry is not None
    assert isinstance(first[0], Forward)
    memo = entry.rules[0].decisions()  # the rule's memo: emptied when full, never grown
    assert 0 < len(memo) <= matching.RULE_MEMO_SIZE
    again = [matching.decide(table, head(p), roll=0.9) for p in paths]
    assert again == first
    assert matching.decide(table, head(paths[-1]), roll=0.1) is memo[paths[-1]]  # memoized
    assert all(isinstance(d, Forward) and d.path == p for d, p in zip(first, paths, strict=True))


def test_decisions_that_depend_on_more_than_the_path_are_not_memoized() -> None:
    split = (BackendRef(WEB, weight=1), BackendRef(API, weight=1))
    table = compile_routes(
        route("split", [HOST], rule(prefix("/split"), backends=split)),
        route("moved", [HOST], rule(prefix("/old"), filters=(redirect(),), backends=())),
    )
    for path in ("/split", "/old"):
        matching.decide(table, head(path), roll=0.5)
        entry = table.lookup(HOST)
        assert entry is not None
        assert all(r.decisions() == {} for r in entry.rules)


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
    table = compile_routes(
        route("web", [HOST], rule(prefix("/shop"))),
        route("split", [HOST], rule(prefix("/split"), backends=split)),
        route("moved", [HOST], rule(prefix("/old"), filters=(redirect(),), backends=())),
    )
    for path in ("/shop/a", "/shop/a", "/split", "/old", "/none"):
        matching.decide(table, head(path), roll=0.5)
        matching.decide_path(table, HOST, path)
    entry = table.lookup(HOST)
    assert entry is not None
    assert any(r.decisions() for r in entry.rules)
    del entry
    with acyclic.paused_collector():
        gc.collect()
        tracked = len(gc.get_objects())
        del table
        unreachable = gc.collect()  # counts objects that only the collector could free
        assert unreachable == 0
        assert len(gc.get_objects()) < tracked - 10  # the table's objects are gone
