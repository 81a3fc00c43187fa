"""Table compilation: backend resolution, the host index and the precedence order."""

from __future__ import annotations

import pytest

from policies import matching, precedence, table
from policies.errors import PolicyError
from policies.matching import Forward, RequestHead
from policies.model import (
    BackendRef,
    ClusterWeight,
    Filter,
    FilterKind,
    Match,
    MemberCluster,
    PolicySet,
    ReferenceGrant,
    RequestMirror,
    RequestRedirect,
    Route,
    RouteKind,
    ServicePort,
    ServiceRef,
    StaticService,
    UpstreamTLS,
)
from policies.table import Backend, ClusterTarget, Endpoint, Inventory
from tests.policies.routing_builders import (
    API,
    EAST,
    HOST,
    WEB,
    WEST,
    cluster,
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

GONE = ServiceRef("shop", "gone", 80)


def only_backend(t: table.RoutingTable, request: RequestHead | None = None) -> Backend:
    decision = matching.decide(t, request or head("/"), roll=0.0)
    assert isinstance(decision, Forward), decision
    return decision.backend


# ---------------------------------------------------------------------------------------------
# Inventory and backend resolution


def test_inventory_from_clusters() -> None:
    east = MemberCluster(
        "east",
        {"topology.kubernetes.io/zone": "us-east-1a"},
        services=(
            StaticService(
                "shop",
                "web",
                (ServicePort(80, ("127.0.1.1:8080", "[::1]:8081")), ServicePort(81, ())),
            ),
            StaticService("shop", "web", (ServicePort(80, ("127.0.1.3:8080",)),)),
        ),
    )
    inventory = table.inventory_from_clusters([east])
    assert inventory.endpoints == {
        ("east", WEB): (
            Endpoint("127.0.1.1", 8080, "east", zone="us-east-1a"),
            Endpoint("::1", 8081, "east", zone="us-east-1a"),
            Endpoint("127.0.1.3", 8080, "east", zone="us-east-1a"),
        ),
        ("east", ServiceRef("shop", "web", 81)): (),
    }


def test_default_spread_covers_every_cluster_with_the_service() -> None:
    tls = UpstreamTLS(server_name="web.shop")
    south = MemberCluster(
        "south",
        {"region": "south"},
        priority=1,
        weight=3,
        services=(StaticService("shop", "web", (ServicePort(80, ("127.0.3.1:8080",)),)),),
        tls=tls,
    )
    without = cluster("north", subnet=4, services=(API,))
    t = compile_routes(route("r", [HOST]), clusters=(WEST, south, EAST, without))
    backend = only_backend(t)
    assert backend.id == "shop/web:80"
    assert [(c.cluster, c.priority, c.weight) for c in backend.targets] == [
        ("east", 0, 1),
        ("south", 1, 3),
        ("west", 1, 1),
    ]
    assert backend.targets[1].tls == tls
    assert backend.targets[0].endpoints == (Endpoint("127.0.1.1", 8080, "east", zone=None),)
    assert t.backends == {"shop/web:80": backend}


def test_explicit_clusters_with_weights_and_priorities() -> None:
    ref = BackendRef(
        WEB,
        clusters=(
            ClusterWeight("west", weight=1),
            ClusterWeight("east", weight=3, priority=2),
            ClusterWeight("nowhere", weight=5),  # not a MemberCluster: left out
            ClusterWeight("north", weight=5),  # does not have the service: left out
            ClusterWeight("south", weight=0),  # weight 0: left out
        ),
    )
    north = cluster("north", subnet=4, services=(API,))
    south = cluster("south", subnet=3)
    t = compile_routes(
        route("r", [HOST], rule(backends=(ref,))), clusters=(EAST, WEST, north, south)
    )
    backend = only_backend(t)
    assert backend.id == "shop/web:80@east=3/p2,north=5,nowhere=5,south=0,west=1"
    assert [(c.cluster, c.priority, c.weight) for c in backend.targets] == [
        ("west", 1, 1),
        ("east", 2, 3),
    ]


def test_cluster_selector() -> None:
    us = cluster("us", subnet=1, labels={"region": "us", "tier": "gold"})
    eu = cluster("eu", subnet=2, labels={"region": "eu", "tier": "gold"})
    ref = BackendRef(WEB, cluster_selector={"tier": "gold", "region": "eu"})
    both = BackendRef(
        WEB,
        clusters=(ClusterWeight("us", 2), ClusterWeight("eu", 1)),
        cluster_selector={"region": "us"},
    )
    t = compile_routes(
        route(
            "r", [HOST], rule(exact("/one"), backends=(ref,)), rule(exact("/two"), backends=(both,))
        ),
        clusters=(us, eu),
    )
    one = only_backend(t, head("/one"))
    two = only_backend(t, head("/two"))
    assert (one.id, [c.cluster for c in one.targets]) == (
        "shop/web:80@{region=eu,tier=gold}",
        ["eu"],
    )
    assert (two.id, [c.cluster for c in two.targets]) == (
        "shop/web:80@eu=1,us=2@{region=us}",
        ["us"],
    )


def test_a_cluster_with_the_service_but_no_endpoints_is_a_target() -> None:
    empty = MemberCluster(
        "east", {}, services=(StaticService("shop", "web", (ServicePort(80, ()),)),)
    )
    backend = only_backend(compile_routes(route("r", [HOST]), clusters=(empty,)))
    assert backend.resolved
    assert backend.targets == (ClusterTarget("east", 0, 1, (), None),)


@pytest.mark.parametrize(
    ("ref", "route_namespace", "grants", "refused", "expected_id"),
    [
        pytest.param(
            BackendRef(GONE), "shop", (), frozenset(), "shop/gone:80", id="no-cluster-has-it"
        ),
        pytest.param(
            BackendRef(WEB, kind="ConfigMap"),
            "shop",
            (),
            frozenset(),
            "shop/web:80~invalid",
            id="unknown-kind",
        ),
        pytest.param(
            BackendRef(WEB), "blog", (), frozenset(), "shop/web:80~refused", id="cross-namespace"
        ),
        pytest.param(
            BackendRef(WEB),
            "blog",
            (
                ReferenceGrant(
                    "shop", "g", (("gateway.networking.k8s.io", "HTTPRoute", "blog"),), ("api",)
                ),
            ),
            frozenset(),
            "shop/web:80~refused",
            id="grant-for-another-service",
        ),
        pytest.param(
            BackendRef(WEB),
            "blog",
            (
                ReferenceGrant(
                    "blog", "g", (("gateway.networking.k8s.io", "HTTPRoute", "blog"),), (None,)
                ),
            ),
            frozenset(),
            "shop/web:80~refused",
            id="grant-in-the-wrong-namespace",
        ),
        pytest.param(
            BackendRef(WEB),
            "shop",
            (),
            frozenset({("shop/r", WEB)}),
            "shop/web:80~refused",
            id="refused-by-the-caller",
        ),
        pytest.param(
            BackendRef(
                WEB,
                filters=(Filter(FilterKind.REQUEST_REDIRECT, request_redirect=RequestRedirect()),),
            ),
            "shop",
            (),
            frozenset(),
            "shop/web:80~invalid",
            id="redirect-on-a-backend",
        ),
    ],
)
def test_unresolved_backends(
    ref: BackendRef,
    route_namespace: str,
    grants: tuple[ReferenceGrant, ...],
    refused: frozenset[tuple[str, ServiceRef]],
    expected_id: str,
) -> None:
    r = route("r", [HOST], rule(backends=(ref,)), namespace=route_namespace)
    t = compile_routes(r, grants=grants, refused=refused)
    decision = matching.decide(t, head("/"), roll=0.0)
    assert decision == matching.Reject(500, "invalid_backend", r.id, f"{r.id}#0")
    entry = t.lookup(HOST)
    assert entry is not None
    (compiled,) = entry.rules
    assert [b.id for b in compiled.backends] == [expected_id]
    assert compiled.invalid_backend_weight == compiled.total_weight == 1
    assert not t.backends[expected_id].resolved


@pytest.mark.parametrize(
    ("kind", "group"),
    [
        pytest.param(RouteKind.HTTP_ROUTE, "gateway.networking.k8s.io", id="httproute"),
        pytest.param(RouteKind.TRAFFIC_POLICY, "fleetgate.io", id="trafficpolicy"),
    ],
)
def test_reference_grant_opens_a_namespace(kind: RouteKind, group: str) -> None:
    grant = ReferenceGrant("shop", "g", ((group, kind.value, "blog"),), ("web",))
    r = route("r", [HOST], namespace="blog", kind=kind)
    assert only_backend(compile_routes(r, grants=(grant,))).id == "shop/web:80"


def test_service_import_resolves_like_a_service() -> None:
    ref = BackendRef(WEB, kind="ServiceImport", group="multicluster.x-k8s.io")
    assert only_backend(compile_routes(route("r", [HOST], rule(backends=(ref,))))).resolved


def test_unresolved_mirror_is_dropped() -> None:
    mirrors = (
        Filter(FilterKind.REQUEST_MIRROR, request_mirror=RequestMirror(GONE)),
        Filter(FilterKind.REQUEST_MIRROR, request_mirror=RequestMirror(API, percent=10.0)),
    )
    t = compile_routes(
        route("r", [HOST], rule(filters=mirrors)), clusters=(cluster("east", services=(WEB, API)),)
    )
    decision = matching.decide(t, head("/"), roll=0.0)
    assert isinstance(decision, Forward)
    assert [(m.backend.id, m.percent) for m in decision.mirrors] == [("shop/api:8080", 10.0)]


def test_weight_zero_refs_are_left_out() -> None:
    t = compile_routes(
        route("r", [HOST], rule(backends=(BackendRef(WEB, weight=0), BackendRef(API))))
    )
    entry = t.lookup(HOST)
    assert entry is not None
    assert [b.id for b in entry.rules[0].backends] == ["shop/api:8080"]
    assert entry.rules[0].total_weight == 1


def test_rules_share_spreads_and_backends() -> None:
    t = compile_routes(
        route("a", ["a.test"], rule(backends=(BackendRef(WEB, weight=2),))),
        route("b", ["b.test"], rule(backends=(BackendRef(WEB, weight=2),))),
    )
    a, b = t.lookup("a.test"), t.lookup("b.test")
    assert a is not None
    assert b is not None
    assert a.rules[0].backends[0] is b.rules[0].backends[0]
    assert list(t.backends) == ["shop/web:80"]
    assert t.backends["shop/web:80"].weight == 1


def test_bad_regex_is_a_policy_error() -> None:
    with pytest.raises(
        PolicyError, match=r"spec.rules\[0\].matches\[1\]: invalid regular expression"
    ):
        compile_routes(route("r", [HOST], rule(prefix("/"), regex("/(unclosed"))))


def test_compile_table_takes_the_inventory_it_is_given() -> None:
    endpoint = Endpoint("127.0.9.9", 9000, "east", zone="z1", ready=False)
    assert (endpoint.address, endpoint.id) == ("127.0.9.9:9000", "127.0.9.9:9000@east")
    inventory = Inventory({("east", WEB): (endpoint,)})
    policies = PolicySet(routes=(route("r", [HOST]),), clusters=(EAST,))
    t = table.compile_table(policies, inventory, version=7)
    assert t.version == 7
    assert only_backend(t).targets[0].endpoints == (endpoint,)


# ---------------------------------------------------------------------------------------------
# Host index


def test_index_entries_are_complete() -> None:
    t = compile_routes(
        route("exact", ["a.example.com", "*.example.com"]),
        route("wild", ["*.example.com"]),
        route("deep", ["*.b.example.com"]),
        route("other", ["other.test"]),
        route("any", []),
    )
    assert list(t.hosts) == ["a.example.com", "other.test"]
    assert [s for s, _ in t.wildcards] == [".b.example.com", ".example.com"]

    def routes(entry: table.HostRoutes | None) -> list[str]:
        assert entry is not None
        return [r.route_id for r in entry.rules]

    assert routes(t.hosts["a.example.com"]) == ["shop/exact", "shop/wild", "shop/any"]
    assert routes(t.hosts["other.test"]) == ["shop/other", "shop/any"]
    assert routes(t.wildcard_index[".b.example.com"]) == [
        "shop/deep",
        "shop/exact",
        "shop/wild",
        "shop/any",
    ]
    assert routes(t.wildcard_index[".example.com"]) == ["shop/exact", "shop/wild", "shop/any"]
    assert routes(t.any_host) == ["shop/any"]
    assert t.lookup("x.y.b.example.com") is t.wildcard_index[".b.example.com"]


@pytest.mark.parametrize(
    ("host", "name"),
    [
        pytest.param("a.example.com", "a.example.com", id="exact"),
        pytest.param("x.b.example.com", "*.b.example.com", id="longest-wildcard"),
        pytest.param("b.example.com", "*.example.com", id="wildcard"),
        pytest.param(".example.com", "", id="empty-label-is-not-covered"),
        pytest.param("other.test", "", id="any-host"),
    ],
)
def test_entry_for_names_the_entry_lookup_uses(host: str, name: str) -> None:
    t = compile_routes(
        route("a", ["a.example.com"]),
        route("wild", ["*.example.com"]),
        route("deep", ["*.b.example.com"]),
        route("any", []),
    )
    found = t.entry_for(host)
    assert found is not None
    assert found == (name, t.lookup(host))
    assert compile_routes(route("a", ["a.example.com"])).entry_for("other.test") is None


def test_table_without_routes() -> None:
    t = compile_routes()
    assert (t.hosts, t.wildcards, t.any_host) == ({}, (), None)
    assert t.lookup("anything") is None


def test_hosts_with_the_same_routes_share_their_entry() -> None:
    t = compile_routes(
        route("wild", ["*.example.com"]), route("a", ["a.example.com", "b.example.com"])
    )
    assert t.hosts["a.example.com"] is t.hosts["b.example.com"]


# ---------------------------------------------------------------------------------------------
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
# Checksum


def test_checksum_ignores_version_and_document_order_but_not_content() -> None:
    a = route("a", [HOST, "*.example.com"], rule(prefix("/a")), created=1)
    b = route("b", [HOST], rule(exact("/b")), rule(prefix("/")), created=2)
    one = compile_routes(a, b, version=1)
    two = compile_routes(b, a, version=2, clusters=(WEST, EAST))
    assert one.checksum == two.checksum
    assert len(one.checksum) == 64
    assert compile_routes(a, version=1).checksum != one.checksum
