"""Routing tables for gateway tests, built from policy model objects with the real compiler."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

from policies.model import (
    BackendRef,
    ClusterWeight,
    Filter,
    Match,
    MemberCluster,
    PolicySet,
    Route,
    RouteKind,
    Rule,
    ServicePort,
    ServiceRef,
    StaticService,
    TrafficSettings,
)
from policies.table import RoutingTable, compile_table, inventory_from_clusters

NS = "shop"
_versions = itertools.count(1)


def service(name: str = "web", port: int = 80) -> ServiceRef:
    return ServiceRef(NS, name, port)


def member(
    name: str,
    endpoints: Mapping[ServiceRef, Sequence[str]],
    *,
    priority: int = 0,
    weight: int = 1,
) -> MemberCluster:
    """A member cluster with static endpoints ("ip:port") per service port."""
    by_service: dict[tuple[str, str], list[ServicePort]] = {}
    for ref, addresses in endpoints.items():
        by_service.setdefault((ref.namespace, ref.name), []).append(
            ServicePort(ref.port, tuple(addresses))
        )
    services = tuple(
        StaticService(ns, name_, tuple(ports)) for (ns, name_), ports in by_service.items()
    )
    return MemberCluster(name, {}, priority=priority, weight=weight, services=services)


def rule(
    *refs: BackendRef,
    matches: Sequence[Match] = (),
    filters: Sequence[Filter] = (),
    settings: TrafficSettings | None = None,
) -> Rule:
    return Rule(None, tuple(matches), tuple(filters), refs, settings or TrafficSettings())


def ref(
    svc: ServiceRef | None = None, *, weight: int = 1, clusters: Sequence[ClusterWeight] = ()
) -> BackendRef:
    return BackendRef(svc or service(), weight=weight, clusters=tuple(clusters))


def table(
    clusters: Sequence[MemberCluster],
    rules: Sequence[Rule],
    *,
    hostnames: Sequence[str] = ("shop.test",),
    extra_routes: Sequence[Route] = (),
) -> RoutingTable:
    route = Route(RouteKind.TRAFFIC_POLICY, NS, "main", tuple(hostnames), tuple(rules))
    policies = PolicySet(routes=(route, *extra_routes), clusters=tuple(clusters))
    return compile_table(policies, inventory_from_clusters(clusters), version=next(_versions))


def single(address: str, *, settings: TrafficSettings | None = None) -> RoutingTable:
    """Everything for shop.test goes to one endpoint in cluster "east"."""
    return table([member("east", {service(): [address]})], [rule(ref(), settings=settings)])
