"""The policy model: frozen, slotted dataclasses for every document kind. Pure data, no I/O.

`policies.loading` builds these from YAML (with a source position on every document) and
`policies.table` compiles them. Both TrafficPolicy and HTTPRoute become a `Route`: fleetgate's own
extensions (per-cluster weights, failover tiers, balancing, retries, ...) are simply absent when the
document is a plain HTTPRoute. Durations are float seconds; 0 means "disabled" as in Gateway API.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping

FLEETGATE_API = "fleetgate.io/v1alpha1"
GATEWAY_API = "gateway.networking.k8s.io/v1"
GATEWAY_API_BETA = "gateway.networking.k8s.io/v1beta1"


@dataclasses.dataclass(frozen=True, slots=True)
class Origin:
    """Where a document (or field) came from, for messages a person can act on."""

    file: str
    line: int  # 1-based
    column: int  # 1-based


NOWHERE = Origin("<memory>", 0, 0)


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    """One finding about a document: `file:line:col: path: message`."""

    origin: Origin
    path: str  # e.g. "spec.rules[1].backendRefs[0].weight"
    message: str  # lower-case sentence: what was expected, what was seen
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        """`file:line:col: [warning: ]path: message`; line 0 (a whole file) and an empty path
        (a whole document, or YAML syntax) are left out rather than printed as `:0:0` or `: :`."""
        where = self.origin.file
        if self.origin.line:
            where += f":{self.origin.line}:{self.origin.column}"
        tag = "warning: " if self.severity is Severity.WARNING else ""
        path = f"{self.path}: " if self.path else ""
        return f"{where}: {tag}{path}{self.message}"


# ---------------------------------------------------------------------------------------------
# Matches (Gateway API HTTPRouteMatch)


class PathKind(enum.Enum):
    EXACT = "Exact"
    PREFIX = "PathPrefix"
    REGEX = "RegularExpression"


class ValueKind(enum.Enum):
    EXACT = "Exact"
    REGEX = "RegularExpression"


@dataclasses.dataclass(frozen=True, slots=True)
class PathMatch:
    kind: PathKind = PathKind.PREFIX
    value: str = "/"


@dataclasses.dataclass(frozen=True, slots=True)
class HeaderMatch:
    name: str  # lower-cased at load time; names compare case-insensitively
    value: str
    kind: ValueKind = ValueKind.EXACT


@dataclasses.dataclass(frozen=True, slots=True)
class QueryMatch:
    name: str  # exact, case-sensitive
    value: str
    kind: ValueKind = ValueKind.EXACT


@dataclasses.dataclass(frozen=True, slots=True)
class Match:
    """Conditions ANDed together. An omitted path is `PathPrefix /`."""

    path: PathMatch = PathMatch()
    headers: tuple[HeaderMatch, ...] = ()
    query_params: tuple[QueryMatch, ...] = ()
    method: str | None = None


# ---------------------------------------------------------------------------------------------
# Filters (Gateway API HTTPRouteFilter)


@dataclasses.dataclass(frozen=True, slots=True)
class HeaderModifier:
    """RequestHeaderModifier / ResponseHeaderModifier. Names lower-cased at load time."""

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


class PathModifierKind(enum.Enum):
    FULL = "ReplaceFullPath"
    PREFIX = "ReplacePrefixMatch"


@dataclasses.dataclass(frozen=True, slots=True)
class PathModifier:
    kind: PathModifierKind
    value: str


@dataclasses.dataclass(frozen=True, slots=True)
class RequestRedirect:
    scheme: str | None = None  # "http" | "https"
    hostname: str | None = None
    port: int | None = None
    path: PathModifier | None = None
    status: int = 302


@dataclasses.dataclass(frozen=True, slots=True)
class URLRewrite:
    hostname: str | None = None
    path: PathModifier | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class RequestMirror:
    backend: ServiceRef
    percent: float = 100.0  # 0..100; `fraction` is converted to a percent at load time


class FilterKind(enum.Enum):
    REQUEST_HEADER_MODIFIER = "RequestHeaderModifier"
    RESPONSE_HEADER_MODIFIER = "ResponseHeaderModifier"
    REQUEST_REDIRECT = "RequestRedirect"
    URL_REWRITE = "URLRewrite"
    REQUEST_MIRROR = "RequestMirror"


@dataclasses.dataclass(frozen=True, slots=True)
class Filter:
    """Exactly one of the payload fields is set, the one `kind` names."""

    kind: FilterKind
    request_header_modifier: HeaderModifier | None = None
    response_header_modifier: HeaderModifier | None = None
    request_redirect: RequestRedirect | None = None
    url_rewrite: URLRewrite | None = None
    request_mirror: RequestMirror | None = None


# ---------------------------------------------------------------------------------------------
# Backends


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceRef:
    """A Kubernetes Service port, as it exists (or not) in each member cluster."""

    namespace: str
    name: str
    port: int

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}:{self.port}"


@dataclasses.dataclass(frozen=True, slots=True)
class ClusterWeight:
    """fleetgate extension on a backendRef: this cluster's share and failover tier.

    `priority` None means "the MemberCluster's own priority"; lower numbers are tried first.
    """

    cluster: str
    weight: int = 1
    priority: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class BackendRef:
    """A Gateway API backendRef, with fleetgate's spread over clusters.

    Without `clusters` and `cluster_selector`, the service is used in every member cluster that
    has it, each cluster in its own MemberCluster priority tier with its capacity weight.
    """

    service: ServiceRef
    weight: int = 1  # relative, 0..1_000_000; 0 = no traffic
    kind: str = "Service"  # "Service" | "ServiceImport"
    group: str = ""
    clusters: tuple[ClusterWeight, ...] = ()
    cluster_selector: Mapping[str, str] | None = None  # matchLabels over MemberCluster labels
    filters: tuple[Filter, ...] = ()


# ---------------------------------------------------------------------------------------------
# Per-rule / per-policy traffic settings (fleetgate extensions; Gateway API names where they exist)


class Algorithm(enum.Enum):
    LEAST_REQUEST = "LeastRequest"  # power of two choices (default)
    ROUND_ROBIN = "RoundRobin"
    RING_HASH = "RingHash"  # consistent hash on the affinity key


@dataclasses.dataclass(frozen=True, slots=True)
class Timeouts:
    request_s: float = 15.0  # whole client transaction, retries included; 0 = none
    backend_request_s: float = 0.0  # one try; 0 = bounded only by request_s
    connect_s: float = 5.0
    idle_s: float = 300.0  # stream idle (no bytes either way)


@dataclasses.dataclass(frozen=True, slots=True)
class Retry:
    attempts: int = 1  # retries, not tries
    # also "gateway-error" and "retriable-status-codes"
    on: tuple[str, ...] = ("connect-failure", "reset")
    codes: tuple[int, ...] = ()
    backoff_base_s: float = 0.025
    backoff_max_s: float = 0.25
    per_try_timeout_s: float = 0.0
    allow_non_idempotent: bool = False
    budget_percent: float = 20.0
    min_retry_concurrency: int = 3
    max_body_bytes: int = 1 << 20


@dataclasses.dataclass(frozen=True, slots=True)
class SessionAffinity:
    kind: str  # "Cookie" | "Header"
    name: str  # cookie or header name (header lower-cased)
    ttl_s: float = 0.0  # cookie Max-Age; 0 = session cookie


@dataclasses.dataclass(frozen=True, slots=True)
class OutlierDetection:
    consecutive_errors: int = 5
    interval_s: float = 10.0
    base_ejection_s: float = 30.0
    max_ejection_s: float = 300.0
    max_ejection_percent: float = 10.0


@dataclasses.dataclass(frozen=True, slots=True)
class HealthCheck:
    path: str = "/healthz"
    interval_s: float = 5.0
    timeout_s: float = 1.0
    jitter_percent: float = 10.0
    unhealthy_threshold: int = 3
    healthy_threshold: int = 2
    expected_statuses: tuple[int, ...] = (200,)
    hostname: str | None = None
    # Between probes of an endpoint that is out (Envoy's unhealthy_interval); None: interval_s.
    unhealthy_interval_s: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class RateLimit:
    requests_per_s: float
    burst: int
    max_concurrent: int = 0  # 0 = unlimited


@dataclasses.dataclass(frozen=True, slots=True)
class TrafficSettings:
    """Everything a TrafficPolicy adds per policy or per rule. A rule's settings override its
    policy's field by field at load time, so compiled rules carry their effective settings."""

    algorithm: Algorithm = Algorithm.LEAST_REQUEST
    timeouts: Timeouts = Timeouts()
    retry: Retry | None = None  # off unless configured
    affinity: SessionAffinity | None = None
    outlier_detection: OutlierDetection | None = None
    rate_limit: RateLimit | None = None


# ---------------------------------------------------------------------------------------------
# Documents


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    name: str | None
    matches: tuple[Match, ...]  # empty = match everything (as if one `PathPrefix /`)
    filters: tuple[Filter, ...]
    backend_refs: tuple[BackendRef, ...]
    settings: TrafficSettings = TrafficSettings()
    origin: Origin = NOWHERE


class RouteKind(enum.Enum):
    TRAFFIC_POLICY = "TrafficPolicy"
    HTTP_ROUTE = "HTTPRoute"


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    """A TrafficPolicy or an HTTPRoute. Id: `namespace/name`; rule ids `namespace/name#i`."""

    kind: RouteKind
    namespace: str
    name: str
    hostnames: tuple[str, ...]  # lower-cased; "*.example.com" wildcards; empty = any host
    rules: tuple[Rule, ...]
    created: int = 0  # creation order: creationTimestamp (epoch s) or load order; older wins ties
    origin: Origin = NOWHERE

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclasses.dataclass(frozen=True, slots=True)
class DnsName:
    """Endpoints that DNS gives: the A and AAAA records of `hostname` on `port`, or the SRV records
    of `srv`, which carry their own ports. Exactly one of `hostname` and `srv` is set. Only the
    controller resolves names (controller.dns); the table compiler sees the addresses it found."""

    hostname: str | None = None
    port: int | None = None  # with `hostname` only
    srv: str | None = None  # e.g. "_https._tcp.web.east.internal"

    def __str__(self) -> str:
        return f"SRV {self.srv}" if self.srv is not None else f"{self.hostname}:{self.port}"


@dataclasses.dataclass(frozen=True, slots=True)
class ServicePort:
    port: int
    endpoints: tuple[str, ...]  # "ip:port"
    dns: DnsName | None = None  # resolved by the controller; its addresses join `endpoints`


@dataclasses.dataclass(frozen=True, slots=True)
class StaticService:
    namespace: str
    name: str
    ports: tuple[ServicePort, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class UpstreamTLS:
    ca_file: str | None = None
    cert_file: str | None = None  # client certificate for mTLS
    key_file: str | None = None
    server_name: str | None = None  # SNI
    insecure_skip_verify: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class MemberCluster:
    name: str
    labels: Mapping[str, str]
    priority: int = 0  # failover tier; 0 first
    weight: int = 1  # capacity weight within its tier
    services: tuple[StaticService, ...] = ()
    kubeconfig: str | None = None  # file (embedded mode) or Secret name (Kubernetes mode)
    tls: UpstreamTLS | None = None
    health_check: HealthCheck | None = None
    origin: Origin = NOWHERE

    @property
    def zone(self) -> str | None:
        return self.labels.get("topology.kubernetes.io/zone") or self.labels.get("zone")

    @property
    def region(self) -> str | None:
        return self.labels.get("topology.kubernetes.io/region") or self.labels.get("region")


@dataclasses.dataclass(frozen=True, slots=True)
class ReferenceGrant:
    """Lets routes in `from_namespaces` use Services in `namespace` (Gateway API ReferenceGrant)."""

    namespace: str
    name: str
    from_kinds: tuple[tuple[str, str, str], ...]  # (group, kind, namespace) allowed to refer
    to_services: tuple[str | None, ...]  # Service names; None = every Service in the namespace
    origin: Origin = NOWHERE

    def allows(self, *, group: str, kind: str, from_namespace: str, service: str) -> bool:
        grants_from = any(
            g == group and k == kind and ns == from_namespace for g, k, ns in self.from_kinds
        )
        return grants_from and any(name in (None, service) for name in self.to_services)


# ---------------------------------------------------------------------------------------------
# Release (model only here; the engine is policies.releases)


@dataclasses.dataclass(frozen=True, slots=True)
class HeaderRoute:
    """setHeaderRoute: requests with this header (or cookie) value go to canary."""

    header: str | None = None  # lower-cased name
    cookie: str | None = None
    value: str = ""
    kind: ValueKind = ValueKind.EXACT


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """One canary step; exactly one field is set."""

    set_weight: int | None = None  # canary percent 0..100
    pause_s: float | None = None  # duration; math.inf = until promoted
    set_header_route: HeaderRoute | None = None
    set_mirror_percent: float | None = None
    analysis: bool = False  # run the release's analysis as a gate here


@dataclasses.dataclass(frozen=True, slots=True)
class Analysis:
    interval_s: float = 30.0
    count: int = 3
    failure_limit: int = 1
    min_requests: int = 50
    min_success_rate: float | None = 0.99  # canary successes / requests
    max_latency_p99_s: float | None = None
    max_success_rate_drop: float | None = None  # canary vs stable, absolute
    prometheus_address: str | None = None
    prometheus_query: str | None = None  # label matchers added to every query (docs/metrics.md)


@dataclasses.dataclass(frozen=True, slots=True)
class Release:
    namespace: str
    name: str
    target: str  # Route name (TrafficPolicy or HTTPRoute) in the same namespace
    stable: BackendRef
    canary: BackendRef
    strategy: str = "Canary"  # "Canary" | "BlueGreen"
    steps: tuple[Step, ...] = ()
    analysis: Analysis | None = None
    sticky: bool = False
    preview_header: HeaderRoute | None = None  # blue-green
    preview_hostname: str | None = None  # blue-green
    abort_ramp_steps: tuple[int, ...] = ()  # empty = abort at once
    abort_ramp_interval_s: float = 10.0  # dwell on each ramp weight once the fleet applied it
    origin: Origin = NOWHERE

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclasses.dataclass(frozen=True, slots=True)
class PolicySet:
    """Every valid document from one load; what the table compiler and the controller consume."""

    routes: tuple[Route, ...] = ()
    clusters: tuple[MemberCluster, ...] = ()
    grants: tuple[ReferenceGrant, ...] = ()
    releases: tuple[Release, ...] = ()
