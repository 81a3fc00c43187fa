"""The precedence order of compiled candidates (gateway_api_rules.md §2): between routes, within
a route, the reasons `fleetgate explain` gives, and hostname coverage."""

from __future__ import annotations

import pytest

from policies import matching, precedence, table
from policies.matching import Forward
from policies.model import Match, Route, RouteKind
from tests.policies.routing_builders import (
    HOST,
    compile_routes,
    exact,
    head,
    header,
    param,
    prefix,
    regex,
    route,
    rule,
)

# Precedence (gateway_api_rules.md §2): the first of two candidates that both match wins.

WINNER, LOSER = "winner", "loser"


def pair(
    winner: Match,
    loser: Match,
    *,
    winner_hosts: tuple[str, ...] = (HOST,),
    loser_hosts: tuple[str, ...] = (HOST,),
    winner_created: int = 0,
    loser_created: int = 0,
) -> tuple[Route, Route]:
    return (
        route(WINNER, winner_hosts, rule(winner), created=winner_created),
        route(LOSER, loser_hosts, rule(loser), created=loser_created),
    )


REQUEST = head(
    "/api/v1/items",
    host="a.b.example.com",
    method="GET",
    headers={"a": "1", "b": "2"},
    query="x=1&y=2",
)
B_HOST = ("a.b.example.com",)


@pytest.mark.parametrize(
    "routes",
    [
        pytest.param(
            pair(
                prefix("/"),
                exact("/api/v1/items"),
                winner_hosts=B_HOST,
                loser_hosts=("*.b.example.com",),
            ),
            id="exact-hostname-beats-wildcard",
        ),
        pytest.param(
            pair(
                prefix("/"),
                exact("/api/v1/items"),
                winner_hosts=("*.b.example.com",),
                loser_hosts=("*.example.com",),
            ),
            id="longer-wildcard-beats-shorter",
        ),
        pytest.param(
            pair(
                prefix("/"), exact("/api/v1/items"), winner_hosts=("*.example.com",), loser_hosts=()
            ),
            id="any-hostname-beats-none",
        ),
        pytest.param(
            pair(
                prefix("/"),
                exact("/api/v1/items"),
                winner_hosts=(*B_HOST, "*.example.com"),
                loser_hosts=("*.b.example.com",),
            ),
            id="a-route-ranks-by-its-best-hostname",
        ),
        pytest.param(
            pair(
                exact("/api/v1/items"),
                prefix("/api/v1/items"),
                winner_hosts=B_HOST,
                loser_hosts=B_HOST,
            ),
            id="exact-path-beats-prefix",
        ),
        pytest.param(
            pair(
                prefix("/api/v1"),
                prefix("/api", method="GET"),
                winner_hosts=B_HOST,
                loser_hosts=B_HOST,
            ),
            id="longer-prefix-beats-method",
        ),
        pytest.param(
            pair(
                prefix("/api", method="GET"),
                prefix("/api", headers=(header("a", "1"), header("b", "2"))),
                winner_hosts=B_HOST,
                loser_hosts=B_HOST,
            ),
            id="method-beats-headers",
        ),
        pytest.param(
            pair(
                prefix("/api", headers=(header("a", "1"),)),
                prefix("/api", query=(param("x", "1"), param("y", "2"))),
                winner_hosts=B_HOST,
                loser_hosts=B_HOST,
            ),
            id="headers-beat-query",
        ),
        pytest.param(
            pair(
                prefix("/api", headers=(header("a", "1"), header("b", "2"))),
                prefix("/api", headers=(header("a", "1"),)),
                winner_hosts=B_HOST,
                loser_hosts=B_HOST,
            ),
            id="more-headers",
        ),
        pytest.param(
            pair(
                prefix("/api", query=(param("x", "1"), param("y", "2"))),
                prefix("/api", query=(param("x", "1"),)),
                winner_hosts=B_HOST,
                loser_hosts=B_HOST,
            ),
            id="more-query-params",
        ),
        pytest.param(
            pair(
                prefix("/api"),
                prefix("/api/"),
                winner_hosts=B_HOST,
                loser_hosts=B_HOST,
                winner_created=1,
                loser_created=2,
            ),
            id="trailing-slash-does-not-lengthen-a-prefix",
        ),
        pytest.param(
            pair(
                prefix("/api", headers=(header("b", "2"),)),
                prefix("/api", headers=(header("a", "1"), header("A", "1"))),
                winner_hosts=B_HOST,
                loser_hosts=B_HOST,
                winner_created=1,
                loser_created=2,
            ),
            id="a-repeated-header-name-counts-once",
        ),
        pytest.param(
            pair(prefix("/"), regex("/api/v1/items"), winner_hosts=B_HOST, loser_hosts=B_HOST),
            id="regex-after-every-prefix",
        ),
        pytest.param(
            pair(
                regex("/api/v[0-9]+/items"),
                regex("/api/.*"),
                winner_hosts=B_HOST,
                loser_hosts=B_HOST,
            ),
            id="longer-regex-first",
        ),
        pytest.param(
            pair(
                prefix("/api"),
                prefix("/api"),
                winner_hosts=B_HOST,
                loser_hosts=B_HOST,
                winner_created=5,
                loser_created=9,
            ),
            id="older-route",
        ),
    ],
)
def test_precedence_between_routes(routes: tuple[Route, Route]) -> None:
    for ordered in (routes, routes[::-1]):
        decision = matching.decide(compile_routes(*ordered), REQUEST, roll=0.0)
        assert isinstance(decision, Forward)
        assert decision.route == f"shop/{WINNER}"


def test_route_name_then_kind_break_ties() -> None:
    routes = [
        route("b", B_HOST, rule(prefix("/api")), namespace="alpha"),
        route("a", B_HOST, rule(prefix("/api")), namespace="beta"),
        route("a", B_HOST, rule(prefix("/api")), namespace="alpha", kind=RouteKind.TRAFFIC_POLICY),
        route("a", B_HOST, rule(prefix("/api")), namespace="alpha"),
    ]
    for ordered in (routes, routes[::-1]):
        entry = compile_routes(*ordered).lookup("a.b.example.com")
        assert entry is not None
        assert [(r.route_id, r.route_kind) for r in entry.rules] == [
            ("alpha/a", "HTTPRoute"),
            ("alpha/a", "TrafficPolicy"),
            ("alpha/b", "HTTPRoute"),
            ("beta/a", "HTTPRoute"),
        ]


def test_rule_then_match_order_within_a_route() -> None:
    r = route(
        "r",
        [HOST],
        rule(prefix("/a"), prefix("/a"), name="first"),
        rule(prefix("/a"), name="second"),
    )
    entry = compile_routes(r).lookup(HOST)
    assert entry is not None
    assert [(c.rule_id, c.match_index) for c in entry.rules] == [
        ("shop/r#first", 0),
        ("shop/r#first", 1),
        ("shop/r#second", 0),
    ]


def test_a_more_specific_hostname_does_not_hide_other_routes() -> None:
    t = compile_routes(
        route("exact", [HOST], rule(prefix("/api"))),
        route("wild", ["*.example.com"], rule(prefix("/"))),
    )
    decision = matching.decide(t, head("/web"), roll=0.0)
    assert isinstance(decision, Forward)
    assert decision.route == "shop/wild"


@pytest.mark.parametrize(
    ("winner", "other", "reason"),
    [
        pytest.param(
            precedence.Key(10, 10, 1, 0, False, 0, 0, 0, "a/a", "HTTPRoute", 0, 0),
            precedence.Key(0, 12, 0, 0, False, 0, 0, 0, "a/a", "HTTPRoute", 0, 0),
            "its route names the host exactly (10 characters against 0)",
            id="exact-host",
        ),
        pytest.param(
            precedence.Key(0, 12, 1, 0, False, 0, 0, 0, "a/a", "HTTPRoute", 0, 0),
            precedence.Key(0, 10, 0, 0, False, 0, 0, 0, "a/a", "HTTPRoute", 0, 0),
            "its route's matching hostname is longer (12 characters against 10)",
            id="host-length",
        ),
        pytest.param(
            precedence.Key(0, 0, 0, 0, False, 0, 0, 0, "a/a", "HTTPRoute", 0, 0),
            precedence.Key(0, 0, 1, 9, False, 0, 0, 0, "a/a", "HTTPRoute", 0, 0),
            "an Exact path beats a PathPrefix path",
            id="path-kind",
        ),
        pytest.param(
            precedence.Key(0, 0, 1, 9, False, 0, 0, 0, "a/a", "HTTPRoute", 0, 0),
            precedence.Key(0, 0, 1, 4, True, 0, 0, 0, "a/a", "HTTPRoute", 0, 0),
            "its path is longer (9 characters against 4)",
            id="path-length",
        ),
        pytest.param(
            precedence.Key(0, 0, 1, 4, True, 0, 0, 0, "a/a", "HTTPRoute", 0, 0),
            precedence.Key(0, 0, 1, 4, False, 3, 0, 0, "a/a", "HTTPRoute", 0, 0),
            "it has a method condition",
            id="method",
        ),
        pytest.param(
            precedence.Key(0, 0, 1, 4, False, 2, 0, 0, "a/a", "HTTPRoute", 0, 0),
            precedence.Key(0, 0, 1, 4, False, 1, 3, 0, "a/a", "HTTPRoute", 0, 0),
            "it has more header conditions (2 against 1)",
            id="headers",
        ),
        pytest.param(
            precedence.Key(0, 0, 1, 4, False, 1, 3, 0, "a/a", "HTTPRoute", 0, 0),
            precedence.Key(0, 0, 1, 4, False, 1, 1, 0, "a/a", "HTTPRoute", 0, 0),
            "it has more query conditions (3 against 1)",
            id="query",
        ),
        pytest.param(
            precedence.Key(0, 0, 1, 4, False, 1, 1, 5, "b/b", "HTTPRoute", 0, 0),
            precedence.Key(0, 0, 1, 4, False, 1, 1, 7, "a/a", "HTTPRoute", 0, 0),
            "its route is older (created 5 against 7)",
            id="created",
        ),
        pytest.param(
            precedence.Key(0, 0, 1, 4, False, 1, 1, 5, "a/a", "TrafficPolicy", 0, 0),
            precedence.Key(0, 0, 1, 4, False, 1, 1, 5, "b/b", "HTTPRoute", 0, 0),
            "its route name comes first (a/a before b/b)",
            id="name",
        ),
        pytest.param(
            precedence.Key(0, 0, 1, 4, False, 1, 1, 5, "a/a", "HTTPRoute", 1, 0),
            precedence.Key(0, 0, 1, 4, False, 1, 1, 5, "a/a", "TrafficPolicy", 0, 0),
            "its route kind comes first (HTTPRoute before TrafficPolicy)",
            id="kind",
        ),
        pytest.param(
            precedence.Key(0, 0, 1, 4, False, 1, 1, 5, "a/a", "HTTPRoute", 0, 3),
            precedence.Key(0, 0, 1, 4, False, 1, 1, 5, "a/a", "HTTPRoute", 1, 0),
            "its rule comes first in the route (#0 before #1)",
            id="rule",
        ),
        pytest.param(
            precedence.Key(0, 0, 1, 4, False, 1, 1, 5, "a/a", "HTTPRoute", 0, 0),
            precedence.Key(0, 0, 1, 4, False, 1, 1, 5, "a/a", "HTTPRoute", 0, 1),
            "its match comes first in the rule (0 before 1)",
            id="match",
        ),
    ],
)
def test_precedence_reasons(winner: precedence.Key, other: precedence.Key, reason: str) -> None:
    assert winner.sort_key() < other.sort_key()
    assert precedence.why(winner, other) == reason


def test_precedence_key_of_a_compiled_rule() -> None:
    r = route(
        "r",
        ["*.example.com", "shop.example.com"],
        rule(
            prefix(
                "/api/",
                method="GET",
                headers=(header("a", "1"), header("A", "2")),
                query=(param("q", "1"),),
            )
        ),
        created=4,
    )
    entry = compile_routes(r).lookup(HOST)
    assert entry is not None
    key = table.precedence_key(entry.rules[0], HOST)
    assert key == precedence.Key(16, 16, 1, 4, True, 1, 1, 4, "shop/r", "HTTPRoute", 0, 0)
    wildcard_key = table.precedence_key(entry.rules[0], "*.example.com")
    assert wildcard_key is not None
    assert (wildcard_key.nonwildcard_host_chars, wildcard_key.host_chars) == (0, 13)
    assert table.precedence_key(entry.rules[0], "other.test") is None


@pytest.mark.parametrize(
    ("hostname", "host", "expected"),
    [
        pytest.param("a.example.com", "a.example.com", True, id="same"),
        pytest.param("a.example.com", "b.example.com", False, id="other"),
        pytest.param("*.example.com", "a.example.com", True, id="one-label"),
        pytest.param("*.example.com", "a.b.example.com", True, id="two-labels"),
        pytest.param("*.example.com", "example.com", False, id="not-apex"),
        pytest.param("*.example.com", "*.b.example.com", True, id="narrower-wildcard"),
        pytest.param("*.b.example.com", "*.example.com", False, id="wider-wildcard"),
        pytest.param("a.example.com", "*.example.com", False, id="name-does-not-cover-wildcard"),
    ],
)
def test_covers(hostname: str, host: str, expected: bool) -> None:
    assert precedence.covers(hostname, host) is expected


# ---------------------------------------------------------------------------------------------
