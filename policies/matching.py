"""Route selection: request head → decision. Pure and synchronous; the caller supplies `roll`.

CONTRACT (written first, so the gateway codes against it):
`decide(table, head, roll=...)` returns exactly one of `Forward`, `Redirect`, `Reject`.
`roll` is a float in [0, 1) used for the weighted backend pick. The gateway then picks a cluster
and endpoint with `policies.balancing`, applies `Forward.request_headers` with
`policies.filters.edit_headers`, and rolls once per mirror against `Mirror.percent`.

Matching (Gateway API HTTPRouteMatch; gateway_api_rules.md §1):
* the host is looked up in the table's index (exact, then wildcard suffixes, then routes without
  hostnames), and the first `CompiledRule` of that entry whose match holds wins: the entry is in
  `policies.precedence` order. Only the rules whose path can hold are tested, in that order
  (`policies.path_index`), so the time of a decision does not grow with the rules of a host;
* paths are compared as the request sent them (`RequestHead.path`, not percent-decoded).
  Exact is character for character; PathPrefix compares whole segments and ignores a trailing "/"
  on the prefix; RegularExpression must match the whole path (Python `re`, `fullmatch`);
* header names compare case-insensitively, values exactly or by a whole-value regex; a header
  repeated in the request is seen as its values comma-joined (the RFC 9110 §5.3 form, which is
  how the gateway builds `RequestHead.headers`);
* query parameters are parsed from `RequestHead.query` as application/x-www-form-urlencoded:
  names and values are percent-decoded ("+" is a space); names compare exactly; a parameter
  repeated in the request is seen as its first value (what the spec recommends);
* a match's conditions hold together; a repeated header or query name counts its first entry.

Decisions:
* RequestRedirect → `Redirect` (Location from `policies.filters.redirect_location`; the query
  string is kept). It wins over backends, which a redirecting rule must not have anyway.
* no backendRefs, or none with weight → `Reject(500, "no_backend")`; the roll landing on a
  backendRef that does not resolve → `Reject(500, "invalid_backend")` (its share of traffic);
  no index entry or no rule → `Reject(404, "no_route")`.
* URLRewrite (the backend's own, else the rule's) sets `Forward.host` and `Forward.path`; without
  one both are None (keep the request's). ReplacePrefixMatch cuts the match's PathPrefix (or
  Exact) value; for a RegularExpression match the whole path counts as matched.
* header modifiers and mirrors: the rule's, then the chosen backend's, in order.
* a decision that depends on the roll alone (no redirect, URLRewrite or session affinity) is made
  once per backend, on the rule's first request, and kept in the rule (`settle`): a decision is
  then a lookup, the same object for every request it fits.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from itertools import accumulate
from types import MappingProxyType
from typing import NamedTuple
from urllib.parse import parse_qsl

from policies import filters
from policies.model import HeaderModifier, PathKind, TrafficSettings
from policies.path_index import PATH_EXACT, PATH_PREFIX, PATH_REGEX, item_holds
from policies.table import (
    Backend,
    CompiledMatch,
    CompiledRule,
    Condition,
    HostRoutes,
    Mirror,
    RoutingTable,
)

NO_HEADERS: Mapping[str, str] = MappingProxyType({})


class RequestHead(NamedTuple):
    """The only view of a request the router gets. Built by the gateway's protocol.

    The head and the decisions below are named tuples, not frozen dataclasses: as immutable, and
    built per request for the price of a tuple. A frozen dataclass's `__init__` sets each field
    through `object.__setattr__`: 1.2 µs for a `Forward`, 0.24 µs as a named tuple, of a decision
    that takes about 2 µs in all (`benchmarks/bench_routing.py`).
    """

    method: str  # upper-case
    host: str  # lower-cased, port stripped
    path: str  # raw path as sent (not percent-decoded), without the query string
    query: str = ""  # raw query string without "?"
    headers: Mapping[str, str] = NO_HEADERS  # lower-cased names;
    # repeated headers comma-joined (RFC 9110 §5.3)
    scheme: str = "http"
    port: int = 80  # the listener port the request arrived on (redirect defaults)


class Forward(NamedTuple):
    route: str  # "namespace/name"
    rule: str  # rule id
    backend: Backend
    path: str | None  # upstream path when a URLRewrite applies, else None (the request's own)
    host: str | None  # Host to send upstream when URLRewrite changed it, else None (keep)
    request_headers: tuple[HeaderModifier, ...]  # rule then backend modifiers, in order
    response_headers: tuple[HeaderModifier, ...]
    mirrors: tuple[Mirror, ...]
    settings: TrafficSettings
    # The rule, when it splits traffic between backends and has session affinity
    # (`gateway.affinity` picks again with the client's key); None otherwise. Only decisions with
    # None here are kept in their rule (`settle`), so a kept decision never points back at its
    # rule: a table holds no reference cycle and reference counting alone frees a replaced one
    # (`policies.acyclic`).
    split: CompiledRule | None


class Redirect(NamedTuple):
    route: str
    rule: str
    status: int  # 301, 302, 303, 307, 308
    location: str
    response_headers: tuple[HeaderModifier, ...] = ()


class Reject(NamedTuple):
    status: int
    reason: str  # stable snake_case: no_route, no_backend, invalid_backend, ...
    route: str | None = None
    rule: str | None = None


Decision = Forward | Redirect | Reject

NO_ROUTE = Reject(404, "no_route")
DECISION_MEMO_SIZE = 4096  # host and path decisions a table remembers (`decide_path`)
_MISS = Reject(0, "not memoized")  # never stored: `decide_path`'s memo probe default


def decide(table: RoutingTable, head: RequestHead, *, roll: float) -> Decision:
    """The decision for `head`; `roll` in [0, 1) picks the backend by weight."""
    entry = table.hosts.get(head.host)
    if entry is None:
        entry = table.lookup(head.host)  # wildcards, then routes without hostnames
        if entry is None:
            return NO_ROUTE
    rule = first_match(entry, head)
    if rule is None:
        return NO_ROUTE
    # Most rules' decisions depend on the roll alone: the rule keeps one per backend (`settle`)
    # and a decision hands out one of them, built once (a memo by path missed on every new path).
    sole = rule.sole
    if sole is not None:
        return sole
    settled = rule.settled
    if settled is None:
        settled = settle(rule)
    if len(settled) == 1:
        return settled[0]
    if not settled:
        return act(rule, head, roll=roll)
    i = bisect_right(rule.bounds, roll * rule.total_weight)  # as `pick_backend` picks
    return settled[i] if i < len(settled) else settled[-1]


def decide_path(table: RoutingTable, host: str, path: str) -> Decision | None:
    """What `decide` answers for every request to `host` and `path`, when nothing else can
    change it; None when something can (then build the whole `RequestHead` and call `decide`).

    It is known from the path alone when the first rule whose path test passes matches on the
    path alone (no method, header or query condition) and neither redirects (the Location
    depends on scheme, port and query) nor splits traffic (a roll); or when no rule serves the
    path (404). The answer, None included, is memoized in the table: a gateway asks this first
    and skips building a `RequestHead` for most requests.
    """
    memo = table.path_decisions
    key = (host, path)
    decision = memo.get(key, _MISS)
    if decision is _MISS:
        decision = _path_decision(table, host, path)
        if len(memo) >= DECISION_MEMO_SIZE:
            memo.clear()
        memo[key] = decision
    return decision


def _path_decision(table: RoutingTable, host: str, path: str) -> Decision | None:
    entry = table.lookup(host)
    if entry is None:
        return NO_ROUTE
    found = entry.path_index().items(path)
    rule = next((item[4] for item in found if item_holds(item, path)), None)
    if rule is None:
        return NO_ROUTE
    # `first_match` stops at this rule or at a later one, depending on the rest of the request,
    # unless this rule matches on the path alone.
    if not rule.match.path_only or rule.redirect is not None or len(rule.backends) != 1:
        return None
    return act(rule, RequestHead("", host, path), roll=0.0)  # reads only the path here


def first_match(entry: HostRoutes, head: RequestHead) -> CompiledRule | None:
    """The first rule of `entry` whose match holds for `head`: the winner by precedence.

    `entry`'s path index gives the rules whose path can hold, in precedence order; the result
    is the linear scan's (`candidates(...)[0]`).
    """
    path = head.path
    params: Mapping[str, str] | None = None
    # `PathIndex.items`, inlined: a method call costs as much as the dict probes.
    index = entry.index or entry.path_index()
    found = index.other
    by_key = index.by_key
    if by_key:
        hit = by_key.get(path)  # an Exact value: every item holds (PATH_HOLDS); see PathIndex
        if hit is not None:
            found = hit
        elif path[:1] == "/":
            end = path.find("/", 1)
            found = by_key.get(path[1:end] if end > 0 else path[1:], found)
    # The path test is inlined (it is `item_holds`): most candidates fail here.
    for code, value, n, path_only, rule in found:
        if code == PATH_PREFIX:
            if not path.startswith(value) or (len(path) > n and path[n] != "/"):
                continue
        elif code == PATH_EXACT:
            if path != value:
                continue
        elif code == PATH_REGEX:
            regex = rule.match.path_regex
            if regex is None or regex.fullmatch(path) is None:
                continue
        if path_only:  # PATH_HOLDS: found under its Exact value, which is the path
            return rule
        m = rule.match
        if m.queries and params is None:
            params = query_params(head.query)
        if conditions_hold(m, head, params):
            return rule
    return None


def candidates(entry: HostRoutes, head: RequestHead) -> list[CompiledRule]:
    """Every rule of `entry` whose match holds, in precedence order (for `fleetgate explain`)."""
    params = query_params(head.query)
    return [
        rule
        for rule in entry.rules
        if path_holds(rule.match, head.path) and conditions_hold(rule.match, head, params)
    ]


def path_holds(m: CompiledMatch, path: str) -> bool:
    if m.path_code == PATH_PREFIX:
        n = len(m.path_value)
        return path.startswith(m.path_value) and (len(path) == n or path[n] == "/")
    if m.path_code == PATH_EXACT:
        return path == m.path_value
    return m.path_regex is not None and m.path_regex.fullmatch(path) is not None


def conditions_hold(m: CompiledMatch, head: RequestHead, params: Mapping[str, str] | None) -> bool:
    """Method, headers and query parameters; `params` must be given when the match has queries."""
    if m.method is not None and head.method != m.method:
        return False
    if m.headers and not _all_hold(m.headers, head.headers):
        return False
    return not m.queries or (params is not None and _all_hold(m.queries, params))


def _all_hold(conditions: tuple[Condition, ...], values: Mapping[str, str]) -> bool:
    for name, value, regex in conditions:
        seen = values.get(name)
        if seen is None:
            return False
        if regex is None:
            if seen != value:
                return False
        elif regex.fullmatch(seen) is None:
            return False
    return True


def query_params(query: str) -> dict[str, str]:
    """Decoded query parameters, each name with its first value."""
    params: dict[str, str] = {}
    if query:
        for name, value in parse_qsl(query, keep_blank_values=True):
            params.setdefault(name, value)
    return params


def act(rule: CompiledRule, head: RequestHead, *, roll: float) -> Decision:
    """What the matched `rule` does with `head`: redirect, reject or forward."""
    redirect = rule.redirect
    if redirect is not None:
        location = filters.redirect_location(
            redirect,
            scheme=head.scheme,
            host=head.host,
            listener_port=head.port,
            path=head.path,
            query=head.query,
            matched_prefix=matched_prefix(rule.match, head.path),
        )
        return Redirect(
            rule.route_id, rule.rule_id, redirect.status, location, rule.response_headers
        )
    backend = pick_backend(rule.backends, rule.total_weight, roll)
    if backend is None:
        return Reject(500, "no_backend", rule.route_id, rule.rule_id)
    return forward(rule, backend, head.path)


def forward(rule: CompiledRule, backend: Backend, path: str) -> Decision:
    """What `rule` does with a request for `path` when the roll has landed on `backend`."""
    if not backend.resolved:
        return Reject(500, "invalid_backend", rule.route_id, rule.rule_id)
    upstream_path, host = None, None
    rewrite = backend.rewrite or rule.rewrite
    if rewrite is not None:
        host = rewrite.hostname
        upstream_path = filters.rewrite_path(path, rewrite.path, matched_prefix(rule.match, path))
    request_headers, response_headers, mirrors = (
        rule.request_headers,
        rule.response_headers,
        rule.mirrors,
    )
    if backend.request_headers:
        request_headers = request_headers + backend.request_headers
    if backend.response_headers:
        response_headers = response_headers + backend.response_headers
    if backend.mirrors:
        mirrors = mirrors + backend.mirrors
    sticky = len(rule.backends) > 1 and rule.settings.affinity is not None
    return Forward(
        rule.route_id,
        rule.rule_id,
        backend,
        upstream_path,
        host,
        request_headers,
        response_headers,
        mirrors,
        rule.settings,
        rule if sticky else None,
    )


def settle(rule: CompiledRule) -> tuple[Decision, ...]:
    """`rule`'s decisions, one per backend with weight, kept in the rule (`CompiledRule.settled`,
    with the running sums of their weights in `bounds`, and the only one also in `sole`) when
    they depend on the roll alone: no redirect (the Location depends on the request), no
    URLRewrite (the upstream path does) and no session affinity (the decision names its rule for
    a second pick). Otherwise (): `act` decides each request. A rule without backends keeps its
    500.

    Made on the rule's first request, not at compile time: most rules of a large table are
    never asked on a given gateway. Memory: a decision per backend of each rule asked.
    """
    settled: tuple[Decision, ...] = ()
    bounds: tuple[int, ...] = ()
    backends = [b for b in rule.backends if b.weight > 0]
    per_request = (
        rule.redirect is not None
        or rule.rewrite is not None
        or rule.settings.affinity is not None
        or any(b.rewrite is not None for b in backends)
    )
    if not per_request and not backends:
        settled = (Reject(500, "no_backend", rule.route_id, rule.rule_id),)
    elif not per_request:
        settled = tuple(forward(rule, b, "") for b in backends)  # "": no rewrite reads it
        bounds = tuple(accumulate(b.weight for b in backends))
    object.__setattr__(rule, "bounds", bounds)
    object.__setattr__(rule, "settled", settled)
    if len(settled) == 1:
        object.__setattr__(rule, "sole", settled[0])
    return settled


def pick_backend(backends: tuple[Backend, ...], total_weight: int, roll: float) -> Backend | None:
    """The backend `roll` lands on, each taking weight/total of [0, 1); weight 0 never."""
    threshold = roll * total_weight
    chosen = None
    for backend in backends:
        weight = backend.weight
        if weight > 0:
            chosen = backend
            if threshold < weight:
                return backend
            threshold -= weight
    return chosen  # the float product can round up to the total: the last backend takes it


def matched_prefix(m: CompiledMatch, path: str) -> str:
    """The part of the path a ReplacePrefixMatch replaces (see the module docstring)."""
    return path if m.match.path.kind is PathKind.REGEX else m.match.path.value
