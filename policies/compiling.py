"""Policies + inventory → RoutingTable: backend resolution, precedence order, host index. Pure.

Backend resolution (DESIGN.md §3):
* a backendRef without `clusters` and `cluster_selector` spreads over every MemberCluster that has
  the service port in the inventory, each with the MemberCluster's priority and capacity weight;
* `clusters` lists the clusters explicitly with their weight and priority (None: the cluster's
  own); listed clusters that do not have the service are left out;
* `cluster_selector` keeps the MemberClusters whose labels hold every selector pair (and, with
  `clusters`, only listed clusters that also match);
* weight-0 clusters and weight-0 backendRefs carry no traffic and are left out;
* a backendRef is invalid (a `Backend` with `resolved=False`, whose share of traffic gets 500) when
  no cluster has the service, its kind is neither Service nor ServiceImport, it points into
  another namespace that no ReferenceGrant opens to the route, the caller listed it in
  `refused`, or it carries a RequestRedirect filter (a redirect cannot be a backend's filter);
* a RequestMirror whose backend does not resolve is dropped (Gateway API).

Backend ids name the spread: `ns/name:port` for the default spread, then `@east=3,west=1/p2`
(explicit clusters, "/p" an explicit priority) and `@{region=eu}` (selector); refused references
get `~refused` and otherwise invalid ones `~invalid`, so one id always means one spread.

Release overlays are not applied here yet: a later step can rewrite a route's `CompiledRule`s
between `compile_route` and `index_hosts` without touching either.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from policies import acyclic, precedence
from policies.errors import PolicyError
from policies.model import (
    BackendRef,
    Filter,
    FilterKind,
    HeaderModifier,
    Match,
    MemberCluster,
    PolicySet,
    Problem,
    RequestRedirect,
    Route,
    RouteKind,
    Rule,
    ServiceRef,
    URLRewrite,
)
from policies.table import (
    Backend,
    ClusterTarget,
    CompiledRule,
    Endpoint,
    HostRoutes,
    Inventory,
    Mirror,
    RoutingTable,
    compile_match,
    match_fields,
)

ROUTE_GROUPS = {
    RouteKind.HTTP_ROUTE: "gateway.networking.k8s.io",
    RouteKind.TRAFFIC_POLICY: "fleetgate.io",
}
BACKEND_KINDS = frozenset({"Service", "ServiceImport"})

Refused = frozenset[tuple[str, ServiceRef]]  # (route id, service) pairs the caller refuses


def inventory_from_clusters(clusters: Sequence[MemberCluster]) -> Inventory:
    """The static endpoints of `clusters` (`MemberCluster.services`), all ready.

    Addresses are "ip:port" or "[v6]:port"; the brackets are dropped from `Endpoint.host`.
    """
    endpoints: dict[tuple[str, ServiceRef], tuple[Endpoint, ...]] = {}
    for cluster in clusters:
        for service in cluster.services:
            for service_port in service.ports:
                ref = ServiceRef(service.namespace, service.name, service_port.port)
                found = tuple(_endpoint(a, cluster) for a in service_port.endpoints)
                endpoints[(cluster.name, ref)] = endpoints.get((cluster.name, ref), ()) + found
    return Inventory(endpoints)


def _endpoint(address: str, cluster: MemberCluster) -> Endpoint:
    host, _, port = address.rpartition(":")
    return Endpoint(host.strip("[]"), int(port), cluster.name, zone=cluster.zone)


def compile_table(
    policies: PolicySet,
    inventory: Inventory,
    *,
    version: int,
    refused: Refused = frozenset(),
) -> RoutingTable:
    """Compile every route of `policies` into one table; raises PolicyError on a bad regex.

    `refused` names (route id, service) references to treat as not permitted, on top of what
    `policies.grants` already decides.
    """
    from policies import snapshot  # snapshot imports policies.table only; no cycle at load time

    with acyclic.paused_collector():
        table, _ = compile_unsigned(policies, inventory, version=version, refused=refused)
        return dataclasses.replace(table, checksum=snapshot.checksum(table))


def compile_unsigned(
    policies: PolicySet,
    inventory: Inventory,
    *,
    version: int,
    refused: Refused = frozenset(),
) -> tuple[RoutingTable, Resolver]:
    """`compile_table` without the checksum (""), and the resolver that knows which backendRef
    each spread came from (what `policies.incremental` re-resolves after an endpoint change)."""
    with acyclic.paused_collector():
        resolver = Resolver(policies, inventory, refused)
        compiled = [(route, compile_route(route, resolver)) for route in policies.routes]
        hosts, wildcards, any_host = index_hosts(compiled)
        table = RoutingTable(
            version=version,
            hosts=hosts,
            wildcards=wildcards,
            any_host=any_host,
            backends=dict(sorted(resolver.spreads.items())),
            checksum="",
        )
        return table, resolver


class Filters(NamedTuple):
    """A filter list split by what each kind does to a request."""

    request_headers: tuple[HeaderModifier, ...]
    response_headers: tuple[HeaderModifier, ...]
    redirect: RequestRedirect | None
    rewrite: URLRewrite | None
    mirrors: tuple[Mirror, ...]


class Resolver:
    """Turns backendRefs into `Backend`s, remembering each distinct spread by id.

    Results are cached by what they depend on: thousands of routes usually name a few services.
    """

    def __init__(self, policies: PolicySet, inventory: Inventory, refused: Refused) -> None:
        self._clusters = sorted(policies.clusters, key=lambda c: c.name)
        self._by_name = {c.name: c for c in self._clusters}
        self._endpoints = inventory.endpoints
        self._grants = policies.grants
        self._refused = refused
        self.spreads: dict[str, Backend] = {}
        self._by_spread_key: dict[tuple[object, ...], Backend] = {}
        self._by_ref_key: dict[tuple[object, ...], Backend] = {}
        self._tuples: dict[tuple[int, ...], tuple[tuple[Backend, ...], int, int]] = {}
        # spread id -> a backendRef it was resolved from, for the spreads whose targets come
        # from the inventory (not the invalid or refused ones)
        self.resolvable: dict[str, BackendRef] = {}

    def backend(self, route: Route, ref: BackendRef) -> Backend:
        spread = self._spread(route, ref)
        # Mirrors in backendRef filters are resolved from the route's namespace.
        key = (spread.id, ref.weight, ref.filters, route.id if ref.filters else None)
        found = self._by_ref_key.get(key)
        if found is not None:
            return found
        filters = self.filters(route, ref.filters)
        if filters.redirect is not None:
            spread = self._remember(
                Backend(f"{ref.service}~invalid", ref.service, 1, (), resolved=False)
            )
        found = self._by_ref_key[key] = dataclasses.replace(
            spread,
            weight=ref.weight,
            request_headers=filters.request_headers,
            response_headers=filters.response_headers,
            rewrite=filters.rewrite,
            mirrors=filters.mirrors,
        )
        return found

    def shared(self, backends: tuple[Backend, ...]) -> tuple[tuple[Backend, ...], int, int]:
        """(backends, total weight, weight of the invalid ones), with one tuple object for every
        rule with the same backends: the gateway reads a rule's backends on every request, and a
        few shared tuples stay in the CPU cache (and the sums are made once per tuple)."""
        key = tuple(map(id, backends))
        found = self._tuples.get(key)
        if found is None:
            total = sum(b.weight for b in backends)
            invalid = sum(b.weight for b in backends if not b.resolved)
            found = self._tuples[key] = (backends, total, invalid)
        return found

    def filters(self, route: Route, filters: Iterable[Filter]) -> Filters:
        """Split filters by kind, keeping their order; the first redirect and rewrite count."""
        request: list[HeaderModifier] = []
        response: list[HeaderModifier] = []
        redirect: RequestRedirect | None = None
        rewrite: URLRewrite | None = None
        mirrors: list[Mirror] = []
        for f in filters:
            if (
                f.kind is FilterKind.REQUEST_HEADER_MODIFIER
                and f.request_header_modifier is not None
            ):
                request.append(f.request_header_modifier)
            elif (
                f.kind is FilterKind.RESPONSE_HEADER_MODIFIER
                and f.response_header_modifier is not None
            ):
                response.append(f.response_header_modifier)
            elif f.kind is FilterKind.REQUEST_REDIRECT and redirect is None:
                redirect = f.request_redirect
            elif f.kind is FilterKind.URL_REWRITE and rewrite is None:
                rewrite = f.url_rewrite
            elif f.kind is FilterKind.REQUEST_MIRROR and f.request_mirror is not None:
                target = self._spread(route, BackendRef(f.request_mirror.backend))
                if target.resolved:
                    mirrors.append(Mirror(target, f.request_mirror.percent))
        return Filters(tuple(request), tuple(response), redirect, rewrite, tuple(mirrors))

    def _spread(self, route: Route, ref: BackendRef) -> Backend:
        service = ref.service
        permitted = self._permitted(route, service)
        selector = None if ref.cluster_selector is None else tuple(ref.cluster_selector.items())
        key = (ref.kind, service, ref.clusters, selector, permitted)
        found = self._by_spread_key.get(key)
        if found is not None:
            return found
        if ref.kind not in BACKEND_KINDS:
            found = Backend(f"{service}~invalid", service, 1, (), resolved=False)
        elif not permitted:
            found = Backend(f"{service}~refused", service, 1, (), resolved=False)
        else:
            targets = self.targets(ref)
            found = Backend(_spread_id(ref), service, 1, targets, resolved=bool(targets))
            self.resolvable.setdefault(found.id, ref)
        found = self._by_spread_key[key] = self._remember(found)
        return found

    def _permitted(self, route: Route, service: ServiceRef) -> bool:
        if (route.id, service) in self._refused:
            return False
        if service.namespace == route.namespace:
            return True
        group, kind = ROUTE_GROUPS[route.kind], route.kind.value
        return any(
            grant.namespace == service.namespace
            and grant.allows(
                group=group, kind=kind, from_namespace=route.namespace, service=service.name
            )
            for grant in self._grants
        )

    def targets(self, ref: BackendRef) -> tuple[ClusterTarget, ...]:
        """The clusters a (valid, permitted) backendRef spreads over, with their endpoints."""
        selector = ref.cluster_selector
        chosen: list[tuple[MemberCluster, int, int]] = []  # (cluster, weight, priority)
        if ref.clusters:
            for listed in ref.clusters:
                cluster = self._by_name.get(listed.cluster)
                if cluster is not None:
                    priority = cluster.priority if listed.priority is None else listed.priority
                    chosen.append((cluster, listed.weight, priority))
        else:
            chosen = [(c, c.weight, c.priority) for c in self._clusters]
        targets = [
            ClusterTarget(
                c.name,
                priority,
                weight,
                self._endpoints[(c.name, ref.service)],
                c.tls,
                c.health_check,
            )
            for c, weight, priority in chosen
            if weight > 0
            and (c.name, ref.service) in self._endpoints
            and (selector is None or _selects(selector, c.labels))
        ]
        return tuple(sorted(targets, key=lambda t: (t.priority, t.cluster)))

    def _remember(self, backend: Backend) -> Backend:
        return self.spreads.setdefault(backend.id, backend)


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _spread_id(ref: BackendRef) -> str:
    parts = []
    if ref.clusters:
        listed = sorted(ref.clusters, key=lambda c: c.cluster)
        parts.append(
            ",".join(
                f"{c.cluster}={c.weight}" + ("" if c.priority is None else f"/p{c.priority}")
                for c in listed
            )
        )
    if ref.cluster_selector is not None:
        pairs = ",".join(f"{k}={v}" for k, v in sorted(ref.cluster_selector.items()))
        parts.append(f"{{{pairs}}}")
    return f"{ref.service}@{'@'.join(parts)}" if parts else str(ref.service)


def compile_route(route: Route, resolver: Resolver) -> tuple[CompiledRule, ...]:
    """Every (rule, match) candidate of `route`; a rule without matches matches everything."""
    out: list[CompiledRule] = []
    shared = _RouteFacts(
        route.id, route.kind._value_, route.created, tuple(sorted(set(route.hostnames)))
    )  # `_value_`, not `.value`: the property is Python code and this runs per route
    for index, rule in enumerate(route.rules):
        out.extend(_compile_rule(route, shared, index, rule, resolver))
    return tuple(out)


class _RouteFacts(NamedTuple):
    id: str
    kind: str
    created: int
    hostnames: tuple[str, ...]  # sorted: their order means nothing


def _compile_rule(
    route: Route, facts: _RouteFacts, index: int, rule: Rule, resolver: Resolver
) -> Iterable[CompiledRule]:
    filters = resolver.filters(route, rule.filters)
    backends, total, invalid = resolver.shared(
        tuple(resolver.backend(route, ref) for ref in rule.backend_refs if ref.weight > 0)
    )
    rule_id = f"{facts.id}#{index if rule.name is None else rule.name}"
    for match_index, match in enumerate(rule.matches or (Match(),)):
        try:
            compiled = compile_match(match)
        except re.error as exc:
            where = f"spec.rules[{index}].matches[{match_index}]"
            problem = Problem(rule.origin, where, f"invalid regular expression: {exc}")
            raise PolicyError((problem,)) from exc
        yield CompiledRule(
            facts.id,
            rule_id,
            index,
            compiled,
            backends,
            total,
            filters.request_headers,
            filters.response_headers,
            filters.redirect,
            filters.rewrite,
            filters.mirrors,
            rule.settings,
            invalid,
            match_index,
            facts.created,
            facts.kind,
            facts.hostnames,
        )


def index_hosts(
    compiled: Sequence[tuple[Route, tuple[CompiledRule, ...]]],
) -> tuple[dict[str, HostRoutes], tuple[tuple[str, HostRoutes], ...], HostRoutes | None]:
    """(hosts, wildcards, any_host): every entry complete and in precedence order."""
    exact: dict[str, list[int]] = {}
    suffixes: dict[str, list[int]] = {}
    hostless: list[int] = []
    for i, (route, _) in enumerate(compiled):
        if not route.hostnames:
            hostless.append(i)
        for name in dict.fromkeys(route.hostnames):
            if name.startswith("*."):
                suffixes.setdefault(name[1:], []).append(i)
            else:
                exact.setdefault(name, []).append(i)
    bases = [[base_key(rule) for rule in rules] for _, rules in compiled]
    memo: dict[tuple[tuple[int, int, int], ...], HostRoutes] = {}

    def entry(host: str) -> HostRoutes:
        # The routes covering `host` (an exact name, "*.suffix", or "" for any host): those
        # naming it, the wildcards of each of its suffixes, and the routes without hostnames.
        found = dict.fromkeys(exact.get(host, ()))
        dot = host.find(".", 1)
        while dot > 0:
            found.update(dict.fromkeys(suffixes.get(host[dot:], ())))
            dot = host.find(".", dot + 1)
        found.update(dict.fromkeys(hostless))
        ranked = []
        for i in found:
            rank = precedence.host_rank(compiled[i][0].hostnames, host)
            assert rank is not None  # every route found covers the host by construction
            ranked.append((i, rank.nonwildcard_chars, rank.chars))
        key = tuple(ranked)
        if key not in memo:
            items = [
                ((-nonwild, -chars, *bases[i][j]), rule)
                for i, nonwild, chars in ranked
                for j, rule in enumerate(compiled[i][1])
            ]
            items.sort(key=lambda item: item[0])
            memo[key] = HostRoutes(tuple(rule for _, rule in items))
        return memo[key]

    hosts = {host: entry(host) for host in sorted(exact)}
    wildcards = tuple(
        (suffix, entry("*" + suffix)) for suffix in sorted(suffixes, key=lambda s: (-len(s), s))
    )
    any_host = entry("") if hostless else None
    return hosts, wildcards, any_host


def base_key(rule: CompiledRule) -> tuple[int | str | bool, ...]:
    """The host-independent part of a candidate's precedence sort key."""
    path_rank, path_chars, has_method, headers, queries = match_fields(rule.match)
    return (
        path_rank,
        -path_chars,
        not has_method,
        -headers,
        -queries,
        rule.created,
        rule.route_id,
        rule.route_kind,
        rule.rule_index,
        rule.match_index,
    )
