"""Gateway API precedence between candidate rules, as a sort key that can explain itself. Pure.

The order, for one request host (gateway_api_rules.md §2; first difference decides):

1. hostname: the route whose matching hostname is the longest non-wildcard name, then the route
   with the longest matching hostname of any kind ("*.a.example.com" before "*.example.com"); a
   route without hostnames comes last. This is a precedence, not a partition: when no rule of the
   more specific route matches, rules of less specific routes that also cover the host still do
   (the spec says "precedence must be given to rules from" the more specific route).
2. path: Exact, then PathPrefix by length, then RegularExpression. A prefix's length is counted
   without its trailing "/", which matching ignores too ("/foo/" and "/foo" tie). Regular
   expressions rank after every Exact and PathPrefix match, longer pattern first: the spec leaves
   their place to the implementation and a regex says nothing reliable about its specificity.
3. a method condition, then the most header conditions, then the most query conditions (each name
   counted once: a repeated name in one match only counts its first entry);
4. the oldest route (`Route.created`), then `namespace/name` alphabetically, then the kind (only
   an HTTPRoute and a TrafficPolicy can share a name);
5. the rule's position in its route, then the match's position in its rule.

Listeners (step 1 of the spec) do not exist here: fleetgate serves one listener set whose
hostnames are the union of the routes'.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

_PATH_WORDS = {0: "an Exact path", 1: "a PathPrefix path", 2: "a RegularExpression path"}


class Key(NamedTuple):
    """A candidate's precedence for one host; smaller sorts first. Fields read naturally."""

    nonwildcard_host_chars: int  # larger wins
    host_chars: int  # larger wins
    path_rank: int  # 0 Exact, 1 PathPrefix, 2 RegularExpression; smaller wins
    path_chars: int  # larger wins
    has_method: bool  # True wins
    header_conditions: int  # larger wins
    query_conditions: int  # larger wins
    created: int  # smaller (older) wins
    route: str  # "namespace/name", alphabetical
    kind: str
    rule_index: int
    match_index: int

    def sort_key(self) -> tuple[int | str, ...]:
        return (
            -self.nonwildcard_host_chars,
            -self.host_chars,
            self.path_rank,
            -self.path_chars,
            not self.has_method,
            -self.header_conditions,
            -self.query_conditions,
            self.created,
            self.route,
            self.kind,
            self.rule_index,
            self.match_index,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class HostRank:
    """How well a route's hostnames cover one request host (step 1 above)."""

    nonwildcard_chars: int
    chars: int


NO_HOSTNAMES = HostRank(0, 0)


def host_rank(hostnames: tuple[str, ...], host: str) -> HostRank | None:
    """The best of `hostnames` for `host` (a name, or "*.suffix" for a wildcard entry).

    None when no hostname covers it. Routes without hostnames cover every host at rank 0.
    A wildcard entry is covered by a wildcard hostname whose suffix it ends with.
    """
    if not hostnames:
        return NO_HOSTNAMES
    best: HostRank | None = None
    for name in hostnames:
        if name == host and not name.startswith("*."):
            return HostRank(len(name), len(name))
        if covers(name, host) and (best is None or len(name) > best.chars):
            best = HostRank(0, len(name))
    return best


def covers(hostname: str, host: str) -> bool:
    """Whether route hostname `hostname` serves `host` (an exact name or a "*.suffix" entry)."""
    if not hostname.startswith("*."):
        return hostname == host
    suffix = hostname[1:]
    if host.startswith("*."):
        return host[1:].endswith(suffix)
    return host.endswith(suffix) and len(host) > len(suffix)


def why(winner: Key, other: Key) -> str:
    """A sentence saying why `winner` sorts before `other`."""
    if winner.nonwildcard_host_chars != other.nonwildcard_host_chars:
        return (
            f"its route names the host exactly ({winner.nonwildcard_host_chars} characters "
            f"against {other.nonwildcard_host_chars})"
        )
    if winner.host_chars != other.host_chars:
        return (
            f"its route's matching hostname is longer ({winner.host_chars} characters "
            f"against {other.host_chars})"
        )
    if winner.path_rank != other.path_rank:
        return f"{_PATH_WORDS[winner.path_rank]} beats {_PATH_WORDS[other.path_rank]}"
    if winner.path_chars != other.path_chars:
        return f"its path is longer ({winner.path_chars} characters against {other.path_chars})"
    if winner.has_method != other.has_method:
        return "it has a method condition"
    if winner.header_conditions != other.header_conditions:
        return (
            f"it has more header conditions ({winner.header_conditions} against "
            f"{other.header_conditions})"
        )
    if winner.query_conditions != other.query_conditions:
        return (
            f"it has more query conditions ({winner.query_conditions} against "
            f"{other.query_conditions})"
        )
    if winner.created != other.created:
        return f"its route is older (created {winner.created} against {other.created})"
    if winner.route != other.route:
        return f"its route name comes first ({winner.route} before {other.route})"
    if winner.kind != other.kind:
        return f"its route kind comes first ({winner.kind} before {other.kind})"
    if winner.rule_index != other.rule_index:
        return (
            f"its rule comes first in the route (#{winner.rule_index} before #{other.rule_index})"
        )
    return f"its match comes first in the rule ({winner.match_index} before {other.match_index})"
