"""Table compilation: backend resolution, the host index and the checksum. The precedence order
of the compiled candidates is in test_precedence_order.py."""

from __future__ import annotations

import pytest

from policies import matching, table
from policies.errors import PolicyError
from policies.matching import Forward, RequestHead
from policies.model import (
    BackendRef,
    ClusterWeight,
    Filter,
    FilterKind,
    MemberCluster,
    PolicySet,
    ReferenceGrant,
    RequestMirror,
    RequestRedirect,
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


# Checksum


def test_checksum_ignores_version_and_document_order_but_not_content() -> None:
    a = route("a", [HOST, "*.example.com"], rule(prefix("/a")), created=1)
    b = route("b", [HOST], rule(exact("/b")), rule(prefix("/")), created=2)
    one = compile_routes(a, b, version=1)
    two = compile_routes(b, a, version=2, clusters=(WEST, EAST))
    assert one.checksum == two.checksum
    assert len(one.checksum) == 64
    assert compile_routes(a, version=1).checksum != one.checksum
