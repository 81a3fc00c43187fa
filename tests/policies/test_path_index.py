"""The per-host path index gives exactly the linear scan's answers (policies.path_index).

The reference is the plain scan of an entry's rules in order: the first rule whose path test
(`matching.path_holds`) and conditions hold. The index must agree for any order of rules,
whatever paths the rules and requests use: segment boundaries, trailing and doubled slashes,
"/", case, percent-encoding and odd characters.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import matching, path_index
from policies.matching import RequestHead
from policies.model import (
    BackendRef,
    HeaderMatch,
    Match,
    PathKind,
    PathMatch,
    Route,
    RouteKind,
    Rule,
    TrafficSettings,
)
from policies.table import CompiledRule, HostRoutes, compile_match
from tests.policies.routing_builders import (
    HOST,
    WEB,
    compile_routes,
    exact,
    head,
    header,
    prefix,
    regex,
    route,
    rule,
)
from tests.policies.test_precedence_properties import CLUSTERS, ROLLS

SEGMENTS = ("a", "ab", "A", "b", "%61", "a.b", "x y", "é", "", "a%2Fb")
REGEXES = ("/a/.*", "/.*", "/[ab]+", "/a", "/A/?", ".*b")

segments = st.lists(st.sampled_from(SEGMENTS), min_size=0, max_size=3)
paths = st.one_of(
    st.builds(
        lambda parts, slash: "/" + "/".join(parts) + ("/" if slash else ""), segments, st.booleans()
    ),
    st.sampled_from(("/", "//", "", "*", "a", "ab", "a/b", "/a//b", "//a", "/a?b")),
)
path_matches = st.one_of(
    st.builds(PathMatch, st.just(PathKind.EXACT), paths),
    st.builds(PathMatch, st.just(PathKind.PREFIX), paths),
    st.builds(PathMatch, st.just(PathKind.REGEX), st.sampled_from(REGEXES)),
    st.just(PathMatch()),  # a match without a path: PathPrefix "/"
)
matches = st.builds(
    Match,
    path=path_matches,
    headers=st.lists(st.sampled_from((HeaderMatch("x-a", "1"),)), max_size=1).map(tuple),
    method=st.sampled_from((None, "GET", "POST")),
)


def compiled_rule(position: int, match: Match) -> CompiledRule:
    return CompiledRule(
        "shop/r", f"shop/r#{position}", position, compile_match(match),
        (), 0, (), (), None, None, (), TrafficSettings(),
    )  # fmt: skip


def linear_first(rules: tuple[CompiledRule, ...], head: RequestHead) -> CompiledRule | None:
    params = matching.query_params(head.query)
    for r in rules:
        if matching.path_holds(r.match, head.path) and matching.conditions_hold(
            r.match, head, params
        ):
            return r
    return None


requests = st.builds(
    RequestHead,
    method=st.sampled_from(("GET", "POST")),
    host=st.just(HOST),
    path=paths,
    headers=st.dictionaries(st.just("x-a"), st.sampled_from(("1", "2"))),
)


@settings(max_examples=400, deadline=None)
@given(entry_matches=st.lists(matches, max_size=40), heads=st.lists(requests, max_size=12))
def test_the_index_picks_what_a_linear_scan_picks(
    entry_matches: list[Match], heads: list[RequestHead]
) -> None:
    rules = tuple(compiled_rule(i, m) for i, m in enumerate(entry_matches))
    entry = HostRoutes(rules)
    index = entry.path_index()
    for request in heads:
        assert matching.first_match(entry, request) is linear_first(rules, request)
        assert index.matching(request.path) == [
            r for r in rules if matching.path_holds(r.match, request.path)
        ]


route_rules = st.builds(
    Rule,
    name=st.none(),
    matches=st.lists(matches, max_size=3).map(tuple),
    filters=st.just(()),
    backend_refs=st.just((BackendRef(WEB),)),
)


@settings(max_examples=150, deadline=None)
@given(
    rules=st.lists(st.lists(route_rules, min_size=1, max_size=6), min_size=1, max_size=4),
    heads=st.lists(requests, min_size=1, max_size=8),
)
def test_compiled_decisions_are_the_linear_scans(
    rules: list[list[Rule]], heads: list[RequestHead]
) -> None:
    # Rules with several matches compile to one candidate per match: a rule is a candidate if
    # any of its matches is, and it wins at the place of its best match.
    routes = [
        Route(RouteKind.HTTP_ROUTE, "shop", f"r{i}", (HOST,), tuple(rs), created=i)
        for i, rs in enumerate(rules)
    ]
    table = compile_routes(*routes, clusters=CLUSTERS)
    entry = table.lookup(HOST)
    assert entry is not None
    for request in heads:
        found = linear_first(entry.rules, request)
        for roll in ROLLS:
            expected = (
                matching.NO_ROUTE if found is None else matching.act(found, request, roll=roll)
            )
            assert matching.decide(table, request, roll=roll) == expected


# (rules in precedence order, request path, the rule that wins or None)
CASES = [
    ((prefix("/a"),), "/a", 0),
    ((prefix("/a"),), "/a/", 0),
    ((prefix("/a"),), "/a/b", 0),
    ((prefix("/a"),), "/ab", None),  # segment boundary
    ((prefix("/a/"),), "/a", 0),  # the trailing "/" of a prefix is ignored
    ((prefix("/a/b"),), "/a/bc", None),
    ((prefix("/a/b"),), "/a/b/", 0),
    ((prefix("/a"),), "/A", None),  # paths are case-sensitive
    ((prefix("/a"),), "/%61", None),  # and compared as sent (not percent-decoded)
    ((prefix("/"),), "/anything/at/all", 0),
    ((prefix("/"),), "*", None),  # no path without a leading "/" has a prefix
    ((exact("/a"),), "/a/", None),
    ((exact("/a/"),), "/a/", 0),
    ((exact("/"),), "/", 0),
    ((exact("/"),), "//", None),
    ((prefix("//x"),), "//x/y", 0),
    ((prefix("//x"),), "/x", None),
    ((regex("/a/.*"),), "/a/b", 0),
    ((regex("/a/.*"),), "/a", None),
    ((exact("/a/b"), prefix("/a")), "/a/b", 0),
    ((prefix("/a", method="POST"), prefix("/a")), "/a/b", 1),  # a GET request
    ((prefix("/a", headers=(header("x-a", "1"),)), exact("/a/b"), regex(".*")), "/a/b", 1),
    ((regex("/b.*"), prefix("/b"), exact("/b")), "/b", 0),
    ((prefix("/a"), regex("a")), "a", 1),  # a path without "/" equal to a segment key
]


@pytest.mark.parametrize("padding", [0, path_index.MIN_INDEXED_RULES])
@pytest.mark.parametrize(("matches", "path", "winner"), CASES)
def test_path_edge_cases(
    matches: tuple[Match, ...], path: str, winner: int | None, padding: int
) -> None:
    # Padding with rules for other segments makes the entry big enough to be indexed.
    others = tuple(prefix(f"/other{i}") for i in range(padding))
    rules = tuple(compiled_rule(i, m) for i, m in enumerate(matches + others))
    entry = HostRoutes(rules)
    found = matching.first_match(entry, RequestHead("GET", HOST, path))
    assert found is (None if winner is None else rules[winner])
    assert bool(entry.path_index().by_key) is (padding > 0)


def indexed(entry: HostRoutes) -> bool:
    return entry.index is not None


def test_an_entry_is_indexed_on_its_first_lookup_and_keeps_the_index() -> None:
    rules = [rule(prefix(f"/s{i}"), name=f"s{i}") for i in range(12)]
    rules += [rule(regex("/s[0-9]+/special"), name="regex"), rule(exact("/"), name="root")]
    rules.append(rule(exact("/s3/exact"), name="s3-exact"))
    table = compile_routes(route("r", [HOST], *rules))
    entry = table.lookup(HOST)
    assert entry is not None
    assert not indexed(entry)  # compiling does not build it
    decision = matching.decide(table, head("/s3/x"), roll=0.0)
    assert indexed(entry)
    index = entry.path_index()
    assert isinstance(decision, matching.Forward)
    assert decision.rule == "shop/r#s3"
    # s0..s11, and the Exact values "/" and "/s3/exact"; the regex is tested for every path.
    assert sorted(index.by_key) == sorted([f"s{i}" for i in range(12)] + ["/", "/s3/exact"])
    assert [item[4].rule_id for item in index.other] == ["shop/r#regex"]
    # Under an Exact value, only the rules that hold for it, in order, already tested.
    holding = index.by_key["/s3/exact"]
    assert [(item[0], item[4].rule_id) for item in holding] == [
        (path_index.PATH_HOLDS, "shop/r#s3-exact"),
        (path_index.PATH_HOLDS, "shop/r#s3"),
    ]
    matching.decide(table, head("/s4"), roll=0.0)
    assert entry.index is index


def test_small_entries_are_scanned_whole() -> None:
    rules = tuple(compiled_rule(i, prefix(f"/s{i}")) for i in range(3))
    index = path_index.build(rules)
    assert index.by_key == {}
    assert [item[4] for item in index.other] == list(rules)
    assert index.items("/s1") == index.other
    assert index.matching("/s1/x") == [rules[1]]
