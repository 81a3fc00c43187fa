"""The compiled routing table: immutable, versioned, indexed for lookup. Pure.

CONTRACT (written first so that every package codes against it):

* `RoutingTable.hosts` maps an exact lower-cased hostname to its `HostRoutes`.
* `RoutingTable.wildcards` holds `(suffix, HostRoutes)` for `*.suffix` hostnames, longest suffix
  first ("*.a.example.com" before "*.example.com"); `suffix` includes the leading dot.
* `RoutingTable.any_host` serves routes without hostnames (or None).
* `HostRoutes.rules` are `CompiledRule`s pre-sorted by Gateway API precedence, so the first rule
  whose match holds wins (see `policies.matching`). An entry indexes its rules by path on its
  first lookup (`policies.path_index`); the index is derived and never on the wire.
* Endpoints come from the caller (`Inventory`): static MemberCluster endpoints in file mode,
  EndpointSlices and DNS in Kubernetes mode. Health is NOT in the table: the gateway tracks it.

Each index entry is complete on its own, so a lookup never falls through to another entry: an
exact host's rules also hold the rules of every wildcard route covering it and of every route
without hostnames; a wildcard entry's rules hold those of every wider wildcard and of routes
without hostnames. The order inside an entry is `policies.precedence`'s.

`compile_table` builds a table from policies and an inventory; the compiler itself lives in
`policies.compiling`, which needs these types (and the wire form, for the checksum).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from policies import path_index, precedence
from policies.model import (
    HeaderModifier,
    HealthCheck,
    Match,
    MemberCluster,
    PathKind,
    PolicySet,
    RequestRedirect,
    ServiceRef,
    TrafficSettings,
    UpstreamTLS,
    URLRewrite,
    ValueKind,
)
from policies.path_index import PATH_EXACT, PATH_PREFIX, PATH_REGEX

if TYPE_CHECKING:
    from policies.matching import Decision  # matching imports this module for its types


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoint:
    """One `ip:port` in one member cluster. Id: `ip:port@cluster`."""

    host: str
    port: int
    cluster: str
    zone: str | None = None
    ready: bool = True  # EndpointSlice `ready`; False endpoints are kept for panic mode only

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def id(self) -> str:
        return f"{self.host}:{self.port}@{self.cluster}"


@dataclasses.dataclass(frozen=True, slots=True)
class ClusterTarget:
    """The part of a backend that lives in one member cluster."""

    cluster: str
    priority: int  # failover tier, lower first
    weight: int  # share within the tier
    endpoints: tuple[Endpoint, ...]
    tls: UpstreamTLS | None = None
    health_check: HealthCheck | None = None  # the MemberCluster's active check; None: unchecked


@dataclasses.dataclass(frozen=True, slots=True)
class Backend:
    """One resolved backendRef: a service spread over clusters (Envoy's "cluster").

    `resolved` False means the Gateway API calls this backendRef invalid (unknown service, refused
    cross-namespace reference): its share of traffic gets 500, as the spec requires.
    The id names the spread, not the rule: `RoutingTable.backends` holds each spread once (weight
    1, no filters); a rule's copy carries the backendRef's weight and filters.
    """

    id: str  # "namespace/name:port", plus "~canary" style suffixes for release overlays
    service: ServiceRef
    weight: int
    targets: tuple[ClusterTarget, ...]  # sorted by (priority, cluster)
    request_headers: tuple[HeaderModifier, ...] = ()  # backendRef-level filters
    response_headers: tuple[HeaderModifier, ...] = ()
    resolved: bool = True
    rewrite: URLRewrite | None = None  # backendRef-level URLRewrite (replaces the rule's)
    mirrors: tuple[Mirror, ...] = ()  # backendRef-level RequestMirrors (added to the rule's)


@dataclasses.dataclass(frozen=True, slots=True)
class Mirror:
    backend: Backend
    percent: float  # 0..100


Condition = tuple[str, str, "re.Pattern[str] | None"]  # (name, value, compiled regex or None)


class CompiledMatch(NamedTuple):
    """A `Match` with its regexes compiled, flattened for the hot loop of `policies.matching`.

    The fields after `query_regexes` are derived from the first four (`compile_match`). Repeated
    header or query names keep their first entry only (Gateway API). A named tuple rather than a
    frozen dataclass: one is built per match of every route, and setting ten fields through
    `object.__setattr__` was a fifth of compiling a table.
    """

    match: Match
    path_regex: re.Pattern[str] | None
    header_regexes: tuple[re.Pattern[str] | None, ...]  # parallel to match.headers
    query_regexes: tuple[re.Pattern[str] | None, ...]  # parallel to match.query_params
    path_code: int
    path_value: str  # a prefix without its trailing "/"
    method: str | None
    headers: tuple[Condition, ...]
    queries: tuple[Condition, ...]
    path_only: bool  # no method, header or query condition


def _first_per_name(conditions: list[Condition]) -> tuple[Condition, ...]:
    seen: set[str] = set()
    out: list[Condition] = []
    for condition in conditions:
        if condition[0] not in seen:
            seen.add(condition[0])
            out.append(condition)
    return tuple(out)


def compile_match(match: Match) -> CompiledMatch:
    """Compile a match's regexes (Python `re`; raises `re.error` on a bad pattern)."""
    path = match.path
    kind = path.kind
    # Identity tests, not a dict: an Enum's __hash__ is Python code, and this runs per match.
    code = (
        PATH_PREFIX
        if kind is PathKind.PREFIX
        else PATH_EXACT
        if kind is PathKind.EXACT
        else PATH_REGEX
    )
    value = path.value.rstrip("/") if code == PATH_PREFIX else path.value
    header_regexes: tuple[re.Pattern[str] | None, ...] = ()
    query_regexes: tuple[re.Pattern[str] | None, ...] = ()
    headers: tuple[Condition, ...] = ()
    queries: tuple[Condition, ...] = ()
    if match.headers:
        header_regexes = tuple(_regex(h.kind, h.value) for h in match.headers)
        headers = _first_per_name(
            [
                (h.name.lower(), h.value, r)
                for h, r in zip(match.headers, header_regexes, strict=True)
            ]
        )
    if match.query_params:
        query_regexes = tuple(_regex(q.kind, q.value) for q in match.query_params)
        queries = _first_per_name(
            [(q.name, q.value, r) for q, r in zip(match.query_params, query_regexes, strict=True)]
        )
    return CompiledMatch(
        match,
        re.compile(path.value) if code == PATH_REGEX else None,
        header_regexes,
        query_regexes,
        code,
        value,
        match.method,
        headers,
        queries,
        match.method is None and not headers and not queries,
    )


def _regex(kind: ValueKind, value: str) -> re.Pattern[str] | None:
    return re.compile(value) if kind is ValueKind.REGEX else None


@dataclasses.dataclass(frozen=True, slots=True)
class CompiledRule:
    """One (route, rule, match) candidate, as the precedence order sees it."""

    # `policies.matching.settle`'s decisions for this rule, one per backend, and the running
    # sums of their weights: made on the rule's first request (None until then; () when each
    # request needs its own decision). A cache, not state: never compared, never on the wire.
    # `sole` is the decision when `settled` holds exactly one, so most decisions read no tuple.
    # The first slots, next to the object's header, which every decision touches anyway (a
    # reference count): in a large table the header's cache line is often the only one of the
    # rule a decision reads.
    sole: Decision | None = dataclasses.field(default=None, init=False, repr=False, compare=False)
    settled: tuple[Decision, ...] | None = dataclasses.field(
        default=None, init=False, repr=False, compare=False
    )
    bounds: tuple[int, ...] = dataclasses.field(default=(), init=False, repr=False, compare=False)
    route_id: str  # "namespace/name"
    rule_id: str  # "namespace/name#i" (or "namespace/name#rule-name" when the rule has a name)
    rule_index: int
    match: CompiledMatch
    backends: tuple[Backend, ...]  # weight 0 entries removed; empty = 500 (no backendRefs)
    total_weight: int
    request_headers: tuple[HeaderModifier, ...]  # rule-level filters in order
    response_headers: tuple[HeaderModifier, ...]
    redirect: RequestRedirect | None
    rewrite: URLRewrite | None
    mirrors: tuple[Mirror, ...]
    settings: TrafficSettings
    invalid_backend_weight: int = 0  # weight that points at unresolved backendRefs → 500
    # What the precedence order needs beyond the match (see policies.precedence):
    match_index: int = 0  # position of the match in its rule
    created: int = 0  # Route.created
    route_kind: str = "TrafficPolicy"  # RouteKind value
    hostnames: tuple[str, ...] = ()  # the route's hostnames


def match_fields(m: CompiledMatch) -> tuple[int, int, bool, int, int]:
    """(path_rank, path_chars, has_method, header_conditions, query_conditions): what the
    precedence order (`policies.precedence.Key`) needs of a match, read from what `compile_match`
    derived rather than worked out again for every candidate. The path codes are the ranks
    (Exact < PathPrefix < RegularExpression); a prefix counts without its trailing "/" (its
    `path_value`); two different Exact paths never both match, so their length is no criterion;
    conditions count distinct names, which is what `headers` and `queries` keep."""
    code = m.path_code
    chars = 0 if code == PATH_EXACT else len(m.path_value)
    return code, chars, m.method is not None, len(m.headers), len(m.queries)


def precedence_key(rule: CompiledRule, host: str) -> precedence.Key | None:
    """`rule`'s place in the precedence order of the index entry for `host` (an exact name,
    "*.suffix" for a wildcard entry, "" for the any-host entry); None if it does not serve it."""
    rank = precedence.host_rank(rule.hostnames, host)
    if rank is None:
        return None
    path_rank, path_chars, has_method, headers, queries = match_fields(rule.match)
    return precedence.Key(
        rank.nonwildcard_chars,
        rank.chars,
        path_rank,
        path_chars,
        has_method,
        headers,
        queries,
        rule.created,
        rule.route_id,
        rule.route_kind,
        rule.rule_index,
        rule.match_index,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class HostRoutes:
    """The rules serving one index entry, and (derived) the index `policies.matching` reads.

    The `policies.path_index` of the rules is built on the entry's first lookup, not by the
    compiler: a table of 10,000 routes compiles faster, a gateway indexes only the hosts it
    serves, and an entry that `policies.delta` carries into the next table keeps its index.
    """

    rules: tuple[CompiledRule, ...]  # precedence order
    index: path_index.PathIndex | None = dataclasses.field(
        default=None, init=False, repr=False, compare=False
    )  # None until `path_index()` builds it; read it directly when it is there

    def path_index(self) -> path_index.PathIndex:
        index = self.index
        if index is None:
            index = path_index.build(self.rules)
            object.__setattr__(self, "index", index)
        return index


@dataclasses.dataclass(frozen=True, slots=True)
class RoutingTable:
    version: int
    hosts: Mapping[str, HostRoutes]
    wildcards: tuple[tuple[str, HostRoutes], ...]
    any_host: HostRoutes | None
    backends: Mapping[str, Backend]  # every backend by id, for health checks and /status
    checksum: str  # sha256 of the canonical wire form, excluding `version`
    # `wildcards` by suffix, derived, so a lookup costs one dict probe per label of the host.
    wildcard_index: Mapping[str, HostRoutes] = dataclasses.field(
        init=False, repr=False, compare=False
    )
    # `policies.matching.decide_path`'s memo: (host, path) -> the decision, or None when the
    # request's method, headers, query or a roll can change it.
    path_decisions: dict[tuple[str, str], Decision | None] = dataclasses.field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "wildcard_index", dict(self.wildcards))
        object.__setattr__(self, "path_decisions", {})

    def lookup(self, host: str) -> HostRoutes | None:
        """The index entry serving `host` (lower-cased, port stripped), or None."""
        entry = self.hosts.get(host)
        if entry is not None:
            return entry
        index = self.wildcard_index
        if index:
            # "*.example.com" covers a.example.com and a.b.example.com, never example.com:
            # the suffix starts at a dot that is not the first character.
            dot = host.find(".", 1)
            while dot > 0:
                entry = index.get(host[dot:])
                if entry is not None:
                    return entry
                dot = host.find(".", dot + 1)
        return self.any_host

    def entry_for(self, host: str) -> tuple[str, HostRoutes] | None:
        """`lookup` with the entry's name: the host, "*.suffix", or "" for the any-host entry.

        The name is what `precedence_key` takes; for explanations, not the hot path.
        """
        if host in self.hosts:
            return host, self.hosts[host]
        for suffix, entry in self.wildcards:
            if host.endswith(suffix) and len(host) > len(suffix):
                return "*" + suffix, entry
        return None if self.any_host is None else ("", self.any_host)


@dataclasses.dataclass(frozen=True, slots=True)
class Inventory:
    """Endpoints observed per (cluster, service port), whatever the source.

    A key with no endpoints means the cluster has the service but nothing is ready behind it
    (the gateway answers 503); a missing key means the cluster does not have it at all.
    """

    endpoints: Mapping[tuple[str, ServiceRef], tuple[Endpoint, ...]]


def compile_table(
    policies: PolicySet,
    inventory: Inventory,
    *,
    version: int,
    refused: frozenset[tuple[str, ServiceRef]] = frozenset(),
) -> RoutingTable:
    """Compile `policies` over `inventory`; see `policies.compiling.compile_table`."""
    from policies import compiling  # compiling imports this module for its types

    return compiling.compile_table(policies, inventory, version=version, refused=refused)


def inventory_from_clusters(clusters: Sequence[MemberCluster]) -> Inventory:
    """The static endpoints of `clusters`; see `policies.compiling.inventory_from_clusters`."""
    from policies import compiling

    return compiling.inventory_from_clusters(clusters)
