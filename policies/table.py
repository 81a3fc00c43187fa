"""The compiled routing table: immutable, versioned, indexed for lookup. Pure.

CONTRACT (written first so that every package codes against it; `compile_table` is filled in by
the routing-core work):

* `RoutingTable.hosts` maps an exact lower-cased hostname to its `HostRoutes`.
* `RoutingTable.wildcards` holds `(suffix, HostRoutes)` for `*.suffix` hostnames, longest suffix
  first ("*.a.example.com" before "*.example.com"); `suffix` includes the leading dot.
* `RoutingTable.any_host` serves routes without hostnames (or None).
* `HostRoutes.rules` are `CompiledRule`s pre-sorted by Gateway API precedence, so the first rule
  whose match holds wins (see `policies.matching`).
* Endpoints come from the caller (`Inventory`): static MemberCluster endpoints in file mode,
  EndpointSlices and DNS in Kubernetes mode. Health is NOT in the table: the gateway tracks it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from policies.model import (
    HeaderModifier,
    Match,
    RequestRedirect,
    ServiceRef,
    TrafficSettings,
    UpstreamTLS,
    URLRewrite,
)


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


@dataclasses.dataclass(frozen=True, slots=True)
class Backend:
    """One resolved backendRef: a service spread over clusters (Envoy's "cluster").

    `resolved` False means the Gateway API calls this backendRef invalid (unknown service, refused
    cross-namespace reference): its share of traffic gets 500, as the spec requires.
    """

    id: str  # "namespace/name:port", plus "~canary" style suffixes for release overlays
    service: ServiceRef
    weight: int
    targets: tuple[ClusterTarget, ...]  # sorted by (priority, cluster)
    request_headers: tuple[HeaderModifier, ...] = ()  # backendRef-level filters
    response_headers: tuple[HeaderModifier, ...] = ()
    resolved: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class Mirror:
    backend: Backend
    percent: float  # 0..100


@dataclasses.dataclass(frozen=True, slots=True)
class CompiledMatch:
    """A `Match` with its regexes compiled and its precedence key computed."""

    match: Match
    path_regex: re.Pattern[str] | None
    header_regexes: tuple[re.Pattern[str] | None, ...]  # parallel to match.headers
    query_regexes: tuple[re.Pattern[str] | None, ...]  # parallel to match.query_params


@dataclasses.dataclass(frozen=True, slots=True)
class CompiledRule:
    """One (route, rule, match) candidate, as the precedence order sees it."""

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


@dataclasses.dataclass(frozen=True, slots=True)
class HostRoutes:
    rules: tuple[CompiledRule, ...]  # precedence order


@dataclasses.dataclass(frozen=True, slots=True)
class RoutingTable:
    version: int
    hosts: Mapping[str, HostRoutes]
    wildcards: tuple[tuple[str, HostRoutes], ...]
    any_host: HostRoutes | None
    backends: Mapping[str, Backend]  # every backend by id, for health checks and /status
    checksum: str  # sha256 of the canonical wire form, excluding `version`


@dataclasses.dataclass(frozen=True, slots=True)
class Inventory:
    """Endpoints observed per (cluster, service port), whatever the source."""

    endpoints: Mapping[tuple[str, ServiceRef], tuple[Endpoint, ...]]
