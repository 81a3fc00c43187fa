"""Short constructors for routing-core tests: policies built in code, no YAML."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from policies import table
from policies.matching import RequestHead
from policies.model import (
    BackendRef,
    Filter,
    FilterKind,
    HeaderMatch,
    HeaderModifier,
    Match,
    MemberCluster,
    PathKind,
    PathMatch,
    PolicySet,
    QueryMatch,
    ReferenceGrant,
    Route,
    RouteKind,
    Rule,
    ServicePort,
    ServiceRef,
    StaticService,
    TrafficSettings,
    ValueKind,
)
from policies.table import RoutingTable

WEB = ServiceRef("shop", "web", 80)
API = ServiceRef("shop", "api", 8080)
HOST = "shop.example.com"


def cluster(
    name: str,
    *,
    subnet: int = 1,
    priority: int = 0,
    weight: int = 1,
    labels: Mapping[str, str] | None = None,
    services: Sequence[ServiceRef] = (WEB,),
) -> MemberCluster:
    """A member cluster whose services each have one endpoint on 127.0.<subnet>.x."""
    static = tuple(
        StaticService(
            s.namespace, s.name, (ServicePort(s.port, (f"127.0.{subnet}.{i + 1}:8080",)),)
        )
        for i, s in enumerate(services)
    )
    return MemberCluster(
        name, dict(labels or {"region": name}), priority=priority, weight=weight, services=static
    )


EAST = cluster("east", subnet=1)
WEST = cluster("west", subnet=2, priority=1)


Headers = tuple[HeaderMatch, ...]
Queries = tuple[QueryMatch, ...]


def prefix(
    value: str, *, method: str | None = None, headers: Headers = (), query: Queries = ()
) -> Match:
    return Match(PathMatch(PathKind.PREFIX, value), headers, query, method)


def exact(
    value: str, *, method: str | None = None, headers: Headers = (), query: Queries = ()
) -> Match:
    return Match(PathMatch(PathKind.EXACT, value), headers, query, method)


def regex(
    value: str, *, method: str | None = None, headers: Headers = (), query: Queries = ()
) -> Match:
    return Match(PathMatch(PathKind.REGEX, value), headers, query, method)


def header(name: str, value: str, *, regex: bool = False) -> HeaderMatch:
    return HeaderMatch(name, value, ValueKind.REGEX if regex else ValueKind.EXACT)


def param(name: str, value: str, *, regex: bool = False) -> QueryMatch:
    return QueryMatch(name, value, ValueKind.REGEX if regex else ValueKind.EXACT)


def rule(
    *matches: Match,
    backends: Sequence[BackendRef] = (BackendRef(WEB),),
    filters: Sequence[Filter] = (),
    name: str | None = None,
    settings: TrafficSettings | None = None,
) -> Rule:
    return Rule(name, matches, tuple(filters), tuple(backends), settings or TrafficSettings())


def route(
    name: str,
    hostnames: Sequence[str],
    *rules: Rule,
    namespace: str = "shop",
    created: int = 0,
    kind: RouteKind = RouteKind.HTTP_ROUTE,
) -> Route:
    return Route(kind, namespace, name, tuple(hostnames), rules or (rule(),), created=created)


Pairs = tuple[tuple[str, str], ...]


def modifier(*, set: Pairs = (), add: Pairs = (), remove: tuple[str, ...] = ()) -> HeaderModifier:
    return HeaderModifier(set=set, add=add, remove=remove)


def request_headers(*, set: Pairs = (), add: Pairs = (), remove: tuple[str, ...] = ()) -> Filter:
    return Filter(
        FilterKind.REQUEST_HEADER_MODIFIER,
        request_header_modifier=modifier(set=set, add=add, remove=remove),
    )


def response_headers(*, set: Pairs = (), add: Pairs = (), remove: tuple[str, ...] = ()) -> Filter:
    return Filter(
        FilterKind.RESPONSE_HEADER_MODIFIER,
        response_header_modifier=modifier(set=set, add=add, remove=remove),
    )


def compile_routes(
    *routes: Route,
    clusters: Sequence[MemberCluster] = (EAST, WEST),
    grants: Sequence[ReferenceGrant] = (),
    version: int = 1,
    refused: frozenset[tuple[str, ServiceRef]] = frozenset(),
) -> RoutingTable:
    policies = PolicySet(routes=routes, clusters=tuple(clusters), grants=tuple(grants))
    inventory = table.inventory_from_clusters(policies.clusters)
    return table.compile_table(policies, inventory, version=version, refused=refused)


def head(
    path: str = "/",
    *,
    host: str = HOST,
    method: str = "GET",
    query: str = "",
    headers: Mapping[str, str] | None = None,
    scheme: str = "http",
    port: int = 80,
) -> RequestHead:
    return RequestHead(method, host, path, query, dict(headers or {}), scheme, port)
