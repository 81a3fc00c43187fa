"""Rules that one document must satisfy on its own (paths, regexes, filter combinations). Pure.

Each check works on the model, so a programmatically built `PolicySet` gets the same verdicts as a
loaded one; `at(path)` turns a field path into the best known position. The Gateway API rules
restated in gateway_api_rules.md §1 and §3 are the source; fleetgate additions are marked.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable, Sequence

from policies.kinds_routes import MAX_WEIGHT, METHODS, MULTICLUSTER_GROUP, REDIRECT_STATUSES
from policies.model import (
    BackendRef,
    Filter,
    FilterKind,
    HeaderMatch,
    HeaderModifier,
    HeaderRoute,
    MemberCluster,
    Origin,
    PathKind,
    PathModifier,
    PathModifierKind,
    Problem,
    QueryMatch,
    Release,
    Route,
    Rule,
    Severity,
    ValueKind,
)

At = Callable[[str], Origin]

# Gateway API HTTPPathMatch: the URL-path characters of RFC 3986, percent-encodings allowed.
_PATH_CHARS = re.compile(r"(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})+")
_ONCE = (
    FilterKind.REQUEST_HEADER_MODIFIER,
    FilterKind.RESPONSE_HEADER_MODIFIER,
    FilterKind.REQUEST_REDIRECT,
    FilterKind.URL_REWRITE,
)
_BACKEND_FILTERS = (FilterKind.REQUEST_HEADER_MODIFIER, FilterKind.RESPONSE_HEADER_MODIFIER)
_BACKEND_GROUPS = {"Service": ("",), "ServiceImport": (MULTICLUSTER_GROUP,)}


class Findings:
    """Problems of one document, placed with `at`."""

    def __init__(self, at: At) -> None:
        self.at = at
        self.problems: list[Problem] = []

    def error(self, path: str, message: str) -> None:
        self.problems.append(Problem(self.at(path), path, message))

    def warn(self, path: str, message: str) -> None:
        self.problems.append(Problem(self.at(path), path, message, Severity.WARNING))


def path_problem(value: str) -> str | None:
    """Why `value` is not a valid Exact/PathPrefix value (gateway_api_rules.md §1), or None."""
    if not value.startswith("/"):
        return f'must start with "/", got "{value}"'
    for bad in ("//", "/./", "/../", "%2f", "%2F", "#"):
        if bad in value:
            return f'must not contain "{bad}", got "{value}"'
    if value.endswith(("/.", "/..")):
        return f'must not end with "/." or "/..", got "{value}"'
    if _PATH_CHARS.fullmatch(value) is None:
        return f'must use only URL path characters, got "{value}"'
    return None


def regex_problem(value: str) -> str | None:
    try:
        re.compile(value)
    except re.error as exc:
        return f"invalid regular expression {value!r}: {exc.msg} at position {exc.pos}"
    return None


def check_route(route: Route, at: At) -> list[Problem]:
    out = Findings(at)
    names: dict[str, int] = {}
    for i, rule in enumerate(route.rules):
        base = f"spec.rules[{i}]"
        if rule.name is not None:
            if rule.name in names:
                out.error(
                    f"{base}.name", f'rule name "{rule.name}" is also rule {names[rule.name]}'
                )
            names.setdefault(rule.name, i)
        _check_matches(out, rule, base)
        _check_filters(out, rule.filters, f"{base}.filters", rule=rule)
        for j, ref in enumerate(rule.backend_refs):
            _check_backend_ref(out, ref, f"{base}.backendRefs[{j}]", rule)
        redirects = any(f.kind is FilterKind.REQUEST_REDIRECT for f in rule.filters)
        if not rule.backend_refs and not redirects:
            out.warn(base, "no backendRefs: every request this rule matches gets 500")
    return out.problems


def _check_matches(out: Findings, rule: Rule, base: str) -> None:
    for j, match in enumerate(rule.matches):
        where = f"{base}.matches[{j}]"
        if match.path.kind is PathKind.REGEX:
            problem = regex_problem(match.path.value)
        else:
            problem = path_problem(match.path.value)
        if problem:
            out.error(f"{where}.path.value", problem)
        if match.method is not None and match.method not in METHODS:
            out.error(
                f"{where}.method", f"must be one of {', '.join(METHODS)}, got {match.method!r}"
            )
        groups: list[tuple[str, Sequence[HeaderMatch | QueryMatch]]] = [
            ("headers", match.headers),
            ("queryParams", match.query_params),
        ]
        for field, conditions in groups:
            seen: set[str] = set()
            for k, condition in enumerate(conditions):
                key = condition.name.lower() if field == "headers" else condition.name
                if key in seen:
                    message = f'"{condition.name}" is repeated: only its first entry counts'
                    out.warn(f"{where}.{field}[{k}].name", message)
                seen.add(key)
                problem = (
                    regex_problem(condition.value) if condition.kind is ValueKind.REGEX else None
                )
                if problem:
                    out.error(f"{where}.{field}[{k}].value", problem)


def _check_filters(
    out: Findings, filters: Sequence[Filter], base: str, *, rule: Rule, backend: bool = False
) -> None:
    owner = "backendRef" if backend else "rule"
    counts: collections.Counter[FilterKind] = collections.Counter()
    for k, f in enumerate(filters):
        where = f"{base}[{k}]"
        counts[f.kind] += 1
        if f.kind in _ONCE and counts[f.kind] == 2:
            out.error(f"{where}.type", f"{f.kind.value} may appear only once per {owner}")
        if backend and f.kind not in _BACKEND_FILTERS:
            out.error(
                f"{where}.type",
                "a backendRef supports only RequestHeaderModifier and ResponseHeaderModifier "
                f"filters, got {f.kind.value}",
            )
            continue
        if f.request_header_modifier:
            _check_modifier(out, f.request_header_modifier, f"{where}.requestHeaderModifier")
        if f.response_header_modifier:
            _check_modifier(out, f.response_header_modifier, f"{where}.responseHeaderModifier")
        if f.request_redirect:
            redirect = f.request_redirect
            at = f"{where}.requestRedirect"
            if redirect.scheme not in (None, "http", "https"):
                out.error(f"{at}.scheme", f"must be http or https, got {redirect.scheme!r}")
            if redirect.status not in REDIRECT_STATUSES:
                codes = ", ".join(str(s) for s in REDIRECT_STATUSES)
                out.error(f"{at}.statusCode", f"must be one of {codes}, got {redirect.status}")
            if not backend and rule.backend_refs:
                out.error(where, "a rule with a RequestRedirect must not have backendRefs")
            _check_path_modifier(out, redirect.path, f"{at}.path", rule)
        if f.url_rewrite:
            _check_path_modifier(out, f.url_rewrite.path, f"{where}.urlRewrite.path", rule)
            if counts[FilterKind.REQUEST_REDIRECT]:
                out.error(where, "URLRewrite and RequestRedirect cannot be combined")
        if f.kind is FilterKind.REQUEST_REDIRECT and counts[FilterKind.URL_REWRITE]:
            out.error(where, "URLRewrite and RequestRedirect cannot be combined")
        if f.request_mirror and not 0 <= f.request_mirror.percent <= 100:
            message = f"must be 0..100, got {f.request_mirror.percent:g}"
            out.error(f"{where}.requestMirror.percent", message)


def _check_modifier(out: Findings, modifier: HeaderModifier, base: str) -> None:
    """Gateway API: a header name may appear in only one action, and once in it."""
    seen: dict[str, str] = {}
    actions = (
        ("set", [n for n, _ in modifier.set]),
        ("add", [n for n, _ in modifier.add]),
        ("remove", list(modifier.remove)),
    )
    for action, names in actions:
        for k, name in enumerate(names):
            key = name.lower()
            path = f"{base}.{action}[{k}]" + ("" if action == "remove" else ".name")
            if key in seen:
                where = "twice in" if seen[key] == action else f"in {seen[key]} and in"
                out.error(path, f'header "{name}" appears {where} {action}')
            seen.setdefault(key, action)


def _check_path_modifier(
    out: Findings, modifier: PathModifier | None, base: str, rule: Rule
) -> None:
    if modifier is None:
        return
    if modifier.kind is PathModifierKind.FULL:
        problem = path_problem(modifier.value)
        if problem:
            out.error(f"{base}.replaceFullPath", problem)
        return
    problem = path_problem(modifier.value) if modifier.value else None
    if problem:
        out.error(f"{base}.replacePrefixMatch", problem)
    matches = rule.matches
    # No matches means Gateway API's default single `PathPrefix /` match.
    if len(matches) > 1 or (matches and matches[0].path.kind is not PathKind.PREFIX):
        out.error(
            base,
            "ReplacePrefixMatch needs a rule with exactly one match, and a PathPrefix one "
            f"(this rule has {len(matches)} match(es))",
        )


def _check_backend_ref(out: Findings, ref: BackendRef, base: str, rule: Rule) -> None:
    if not 0 <= ref.weight <= MAX_WEIGHT:
        out.error(f"{base}.weight", f"must be an integer 0..{MAX_WEIGHT}, got {ref.weight}")
    groups = _BACKEND_GROUPS.get(ref.kind)
    if groups is None:
        out.error(f"{base}.kind", f"must be Service or ServiceImport, got {ref.kind!r}")
    elif ref.group not in groups:
        out.error(f"{base}.group", f'must be "{groups[0]}" for a {ref.kind}, got "{ref.group}"')
    seen: set[str] = set()
    for k, cluster in enumerate(ref.clusters):
        if cluster.cluster in seen:
            out.error(f"{base}.clusters[{k}].name", f'cluster "{cluster.cluster}" is listed twice')
        seen.add(cluster.cluster)
        if not 0 <= cluster.weight <= MAX_WEIGHT:
            message = f"must be an integer 0..{MAX_WEIGHT}, got {cluster.weight}"
            out.error(f"{base}.clusters[{k}].weight", message)
    _check_filters(out, ref.filters, f"{base}.filters", rule=rule, backend=True)


def check_cluster(cluster: MemberCluster, at: At) -> list[Problem]:
    out = Findings(at)
    if not 0 <= cluster.weight <= MAX_WEIGHT:
        out.error("spec.weight", f"must be an integer 0..{MAX_WEIGHT}, got {cluster.weight}")
    services: dict[tuple[str, str], int] = {}
    for i, service in enumerate(cluster.services):
        key = (service.namespace, service.name)
        if key in services:
            out.error(
                f"spec.services[{i}]",
                f"service {service.namespace}/{service.name} is also services[{services[key]}]",
            )
        services.setdefault(key, i)
        ports: set[int] = set()
        for j, port in enumerate(service.ports):
            if port.port in ports:
                out.error(
                    f"spec.services[{i}].ports[{j}].port", f"port {port.port} is listed twice"
                )
            ports.add(port.port)
    check = cluster.health_check
    if check is not None:
        # 0s would probe in a busy loop (intervals) or fail every probe (timeout).
        durations = (
            ("interval", check.interval_s),
            ("unhealthyInterval", check.unhealthy_interval_s),
            ("timeout", check.timeout_s),
        )
        for name, seconds in durations:
            if seconds is not None and seconds <= 0:
                out.error(f"spec.healthCheck.{name}", f"must be more than 0s, got {seconds:g}s")
    return out.problems


def check_release(release: Release, at: At) -> list[Problem]:
    out = Findings(at)
    steps = "spec.strategy.canary.steps"
    for k, step in enumerate(release.steps):
        if step.set_weight is not None and not 0 <= step.set_weight <= 100:
            out.error(f"{steps}[{k}].setWeight", f"must be 0..100, got {step.set_weight}")
        if step.set_mirror_percent is not None and not 0 <= step.set_mirror_percent <= 100:
            message = f"must be 0..100, got {step.set_mirror_percent:g}"
            out.error(f"{steps}[{k}].setMirror.percent", message)
        if step.analysis and release.analysis is None:
            out.error(f"{steps}[{k}].analysis", "an analysis step needs spec.analysis")
        _check_header_route(out, step.set_header_route, f"{steps}[{k}].setHeaderRoute.match[0]")
    _check_header_route(out, release.preview_header, "spec.strategy.blueGreen.previewHeader")
    previous = 101
    for k, weight in enumerate(release.abort_ramp_steps):
        if not 0 <= weight < previous:
            out.error(
                f"spec.abort.rampSteps[{k}]", f"must go down from 100 towards 0, got {weight}"
            )
        previous = weight
    if release.analysis and release.analysis.prometheus_address is not None:
        address = release.analysis.prometheus_address
        if not address.startswith(("http://", "https://")):
            message = f'must be an http:// or https:// URL, got "{address}"'
            out.error("spec.analysis.prometheus.address", message)
    if release.stable == release.canary:
        out.error("spec.canary.backendRef", "must differ from spec.stable.backendRef")
    return out.problems


def _check_header_route(out: Findings, route: HeaderRoute | None, base: str) -> None:
    if route is None or route.kind is not ValueKind.REGEX:
        return
    problem = regex_problem(route.value)
    if problem:
        field = "headerValue" if route.header is not None else "cookieValue"
        out.error(f"{base}.{field}.regex", problem)
