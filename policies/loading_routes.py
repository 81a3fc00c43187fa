"""Build a `Route` from a checked TrafficPolicy or HTTPRoute spec, rule settings resolved. Pure.

Traffic settings: a TrafficPolicy may set `loadBalancer`, `sessionAffinity`, `timeouts`, `retry`,
`outlierDetection` and `rateLimit` on its spec and on each rule. The spec's blocks are defaults
copied into every rule (so a spec-level `rateLimit` limits each rule on its own); a rule's block
overrides them field by field (`timeouts: {request: 2s}` keeps the spec's `connect`), except
`loadBalancer` and `sessionAffinity`, which a rule replaces whole because their fields depend on
their `type`. `Rule.settings` is therefore the effective setting. A `sessionAffinity` without an
explicit `loadBalancer` selects RingHash: affinity is a consistent hash of the cookie or header.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from policies.kinds_routes import FILTER_FIELDS, SETTINGS_FIELDS
from policies.model import (
    Algorithm,
    BackendRef,
    ClusterWeight,
    Filter,
    FilterKind,
    HeaderMatch,
    HeaderModifier,
    Match,
    Origin,
    OutlierDetection,
    PathKind,
    PathMatch,
    PathModifier,
    PathModifierKind,
    QueryMatch,
    RateLimit,
    RequestMirror,
    RequestRedirect,
    Retry,
    Route,
    RouteKind,
    Rule,
    ServiceRef,
    SessionAffinity,
    Timeouts,
    TrafficSettings,
    URLRewrite,
    ValueKind,
)
from policies.reading import Fields, Reader

_REPLACED_WHOLE = frozenset({"loadBalancer", "sessionAffinity"})


def build_route(
    reader: Reader,
    spec: Fields,
    *,
    kind: RouteKind,
    namespace: str,
    name: str,
    created: int,
    origin: Origin,
) -> Route:
    defaults: dict[str, Fields | None] = {}
    if kind is RouteKind.TRAFFIC_POLICY:
        defaults = {block: spec.obj(block) for block in SETTINGS_FIELDS}
    rules = tuple(_rule(reader, rule, defaults, namespace) for rule in spec.objs("rules"))
    if kind is RouteKind.HTTP_ROUTE and not spec.has("rules"):
        # Gateway API's default: one rule matching every path, without backends (so 500).
        rules = (Rule(None, (), (), (), origin=origin),)
    return Route(
        kind=kind,
        namespace=namespace,
        name=name,
        hostnames=tuple(spec.texts("hostnames")),
        rules=rules,
        created=created,
        origin=origin,
    )


def _rule(
    reader: Reader, rule: Fields, defaults: Mapping[str, Fields | None], namespace: str
) -> Rule:
    return Rule(
        name=rule.opt_text("name"),
        matches=tuple(_match(m) for m in rule.objs("matches")),
        filters=_filters(reader, rule, namespace),
        backend_refs=tuple(backend_ref(reader, b, namespace) for b in rule.objs("backendRefs")),
        settings=_settings(reader, defaults, rule),
        origin=rule.origin,
    )


def _match(match: Fields) -> Match:
    path = match.obj("path")
    return Match(
        path=PathMatch(PathKind(path.text("type", "PathPrefix")), path.text("value", "/"))
        if path
        else PathMatch(),
        headers=tuple(
            HeaderMatch(h.text("name").lower(), h.text("value"), ValueKind(h.text("type", "Exact")))
            for h in match.objs("headers")
        ),
        query_params=tuple(
            QueryMatch(q.text("name"), q.text("value"), ValueKind(q.text("type", "Exact")))
            for q in match.objs("queryParams")
        ),
        method=match.opt_text("method"),
    )


def _filters(reader: Reader, owner: Fields, namespace: str) -> tuple[Filter, ...]:
    out = []
    for f in owner.objs("filters"):
        built = _filter(reader, f, namespace)
        if built is not None:
            out.append(built)
    return tuple(out)


def _filter(reader: Reader, f: Fields, namespace: str) -> Filter | None:
    type_name = f.opt_text("type")
    if type_name is None:  # missing or unknown: already reported
        return None
    kind = FilterKind(type_name)
    payload = f.obj(FILTER_FIELDS[type_name]) or Fields(
        f.at(FILTER_FIELDS[type_name]), f.origin, {}
    )
    if kind is FilterKind.REQUEST_HEADER_MODIFIER:
        return Filter(kind, request_header_modifier=_modifier(payload))
    if kind is FilterKind.RESPONSE_HEADER_MODIFIER:
        return Filter(kind, response_header_modifier=_modifier(payload))
    if kind is FilterKind.REQUEST_REDIRECT:
        redirect = RequestRedirect(
            scheme=payload.opt_text("scheme"),
            hostname=payload.opt_text("hostname"),
            port=payload.opt_integer("port"),
            path=_path_modifier(payload.obj("path")),
            status=payload.integer("statusCode", 302),
        )
        return Filter(kind, request_redirect=redirect)
    if kind is FilterKind.URL_REWRITE:
        rewrite = URLRewrite(payload.opt_text("hostname"), _path_modifier(payload.obj("path")))
        return Filter(kind, url_rewrite=rewrite)
    return Filter(kind, request_mirror=_mirror(reader, payload, namespace))


def _modifier(f: Fields) -> HeaderModifier:
    return HeaderModifier(
        set=tuple((h.text("name").lower(), h.text("value")) for h in f.objs("set")),
        add=tuple((h.text("name").lower(), h.text("value")) for h in f.objs("add")),
        remove=tuple(name.lower() for name in f.texts("remove")),
    )


def _path_modifier(f: Fields | None) -> PathModifier | None:
    type_name = f.opt_text("type") if f else None
    if f is None or type_name is None:
        return None
    kind = PathModifierKind(type_name)
    field = "replaceFullPath" if kind is PathModifierKind.FULL else "replacePrefixMatch"
    return PathModifier(kind, f.text(field, "/"))


def _mirror(reader: Reader, f: Fields, namespace: str) -> RequestMirror:
    ref = f.obj("backendRef") or Fields(f.at("backendRef"), f.origin, {})
    percent = f.number("percent", 100.0)
    fraction = f.obj("fraction")
    if fraction is not None:
        numerator, denominator = fraction.integer("numerator"), fraction.integer("denominator", 100)
        if numerator > denominator:
            reader.report(
                fraction.at("numerator"), f"must not exceed the denominator ({denominator})"
            )
        percent = 100.0 * min(numerator, denominator) / denominator
    return RequestMirror(backend=service_ref(ref, namespace), percent=percent)


def service_ref(f: Fields, namespace: str) -> ServiceRef:
    return ServiceRef(f.text("namespace", namespace), f.text("name"), f.integer("port"))


def backend_ref(reader: Reader, f: Fields, namespace: str) -> BackendRef:
    selector = f.obj("clusterSelector")
    return BackendRef(
        service=service_ref(f, namespace),
        weight=f.integer("weight", 1),
        kind=f.text("kind", "Service"),
        group="" if f.text("group") == "core" else f.text("group"),
        clusters=tuple(
            ClusterWeight(c.text("name"), c.integer("weight", 1), c.opt_integer("priority"))
            for c in f.objs("clusters")
        ),
        cluster_selector=selector.mapping("matchLabels") if selector else None,
        filters=_filters(reader, f, namespace),
    )


# ---------------------------------------------------------------------------------------------
# Settings


@dataclasses.dataclass(frozen=True, slots=True)
class _Block:
    """One settings block after layering: merged values and where each value was written."""

    fields: Fields
    paths: Mapping[str, str]

    @property
    def path(self) -> str:
        return self.fields.path


def _layer(*, default: Fields | None, own: Fields | None, whole: bool) -> _Block | None:
    if own is None and default is None:
        return None
    if own is None or default is None or whole:
        src = own or default
        assert src is not None
        return _Block(src, {k: src.at(k) for k in src.values})
    values = {**default.values, **own.values}
    paths = {k: (own if k in own.values else default).at(k) for k in values}
    return _Block(Fields(own.path, own.origin, values), paths)


def _settings(
    reader: Reader, defaults: Mapping[str, Fields | None], rule: Fields
) -> TrafficSettings:
    blocks = {
        name: _layer(default=defaults.get(name), own=rule.obj(name), whole=name in _REPLACED_WHOLE)
        for name in SETTINGS_FIELDS
    }
    affinity = _affinity(blocks["sessionAffinity"])
    return TrafficSettings(
        algorithm=_algorithm(reader, blocks["loadBalancer"], blocks["sessionAffinity"]),
        timeouts=_timeouts(reader, blocks["timeouts"]),
        retry=_retry(reader, blocks["retry"]),
        affinity=affinity,
        outlier_detection=_outlier(reader, blocks["outlierDetection"]),
        rate_limit=_rate_limit(blocks["rateLimit"]),
    )


def _algorithm(reader: Reader, lb: _Block | None, affinity: _Block | None) -> Algorithm:
    chosen = lb.fields.opt_text("type") if lb else None
    if chosen is None:
        return Algorithm.RING_HASH if affinity else Algorithm.LEAST_REQUEST
    algorithm = Algorithm(chosen)
    if affinity and algorithm is not Algorithm.RING_HASH:
        reader.report(
            affinity.path,
            f"needs loadBalancer type RingHash (affinity is a consistent hash), got {chosen}",
        )
    return algorithm


def _affinity(block: _Block | None) -> SessionAffinity | None:
    if block is None or block.fields.opt_text("type") is None:
        return None
    f = block.fields
    if f.text("type") == "Cookie":
        return SessionAffinity("Cookie", f.text("cookieName"), f.number("ttl", 0.0))
    return SessionAffinity("Header", f.text("headerName").lower())


def _timeouts(reader: Reader, block: _Block | None) -> Timeouts:
    d = Timeouts()
    if block is None:
        return d
    f = block.fields
    out = Timeouts(
        request_s=f.number("request", d.request_s),
        backend_request_s=f.number("backendRequest", d.backend_request_s),
        connect_s=f.number("connect", d.connect_s),
        idle_s=f.number("idle", d.idle_s),
    )
    if out.request_s and out.backend_request_s > out.request_s:
        reader.report(
            block.paths["backendRequest"],
            f"must not be longer than request ({_s(out.request_s)})",
        )
    return out


def _retry(reader: Reader, block: _Block | None) -> Retry | None:
    if block is None:
        return None
    d, f = Retry(), block.fields
    codes = tuple(f.integers("codes"))
    on = tuple(f.texts("retryOn")) if f.has("retryOn") else d.on
    if codes and not f.has("retryOn"):
        on = (*on, "retriable-status-codes")
    if codes and "retriable-status-codes" not in on:
        reader.report(
            block.paths["codes"], 'are used only when retryOn has "retriable-status-codes"'
        )
    base = f.number("backoff", d.backoff_base_s)
    top = f.number("maxBackoff", max(d.backoff_max_s, 10 * base))
    if top < base:
        reader.report(block.paths["maxBackoff"], f"must not be shorter than backoff ({_s(base)})")
    return Retry(
        attempts=f.integer("attempts", d.attempts),
        on=on,
        codes=codes,
        backoff_base_s=base,
        backoff_max_s=top,
        per_try_timeout_s=f.number("perTryTimeout", d.per_try_timeout_s),
        allow_non_idempotent=f.flag("allowNonIdempotent", d.allow_non_idempotent),
        budget_percent=f.number("budgetPercent", d.budget_percent),
        min_retry_concurrency=f.integer("minRetryConcurrency", d.min_retry_concurrency),
        max_body_bytes=f.integer("maxBodyBytes", d.max_body_bytes),
    )


def _outlier(reader: Reader, block: _Block | None) -> OutlierDetection | None:
    if block is None:
        return None
    d, f = OutlierDetection(), block.fields
    base = f.number("baseEjectionTime", d.base_ejection_s)
    out = OutlierDetection(
        consecutive_errors=f.integer("consecutiveErrors", d.consecutive_errors),
        interval_s=f.number("interval", d.interval_s),
        base_ejection_s=base,
        max_ejection_s=f.number("maxEjectionTime", max(d.max_ejection_s, base)),
        max_ejection_percent=f.number("maxEjectionPercent", d.max_ejection_percent),
    )
    if out.max_ejection_s < base:
        reader.report(
            block.paths["maxEjectionTime"],
            f"must not be shorter than baseEjectionTime ({_s(base)})",
        )
    return out


def _rate_limit(block: _Block | None) -> RateLimit | None:
    if block is None or not block.fields.has("requestsPerSecond"):
        return None
    f = block.fields
    rps = f.number("requestsPerSecond")
    return RateLimit(rps, f.integer("burst", math.ceil(rps)), f.integer("maxConcurrent", 0))


def _s(seconds: float) -> str:
    return f"{seconds:g}s"
