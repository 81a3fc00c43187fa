"""Release overlays: the live split as data, and the PolicySet rewrite that applies it. Pure.

The controller keeps live weights here, never in the operator's YAML (Argo Rollouts' managed
routes fight GitOps tools: argo-rollouts #3854, #2463; gatewayapi plugin #203, #208). Applying an
overlay rewrites the target route in memory before the table is compiled, so the compiler needs
no release knowledge:

* weight: in every rule of the target route, the stable backendRef of weight s becomes the canary
  (weight s·w) placed right before the stable (weight s·(100-w)); other backendRefs are scaled by
  100 so their share is unchanged; then every weight is divided by the common divisor. Canary
  comes first so that a sticky roll below w/100 lands on it (`policies.cohorts`).
* header route (and the blue-green preview header): a copy of each such rule, appended to the
  route, whose matches carry one more header condition and which sends everything to canary.
  One more header condition outranks the original rule (Gateway API precedence), which is the
  point. Caveat: when the original match already tests the same header name, the copy does not
  outrank it. Cookies are matched on the `cookie` header with an anchored regular expression.
* mirror: a RequestMirror filter to the canary's service on each such rule.
* preview hostname (blue-green): a copy of the route, named `<route>~preview`, for that hostname
  only, with the stable backendRef replaced by the canary.
* sticky: the rewritten rules get a session-affinity key (the rule's own, or the
  `fleetgate-cohort` cookie) so the gateway can hash users into cohorts.

A canary without clusters or a cluster selector inherits the stable backendRef's spread: "a new
version in the same clusters" needs no repetition. Mirrors can only name a service, so mirroring
to a canary that differs from stable by cluster alone is not expressible.
"""

from __future__ import annotations

import dataclasses
import math
import re

from policies import cohorts
from policies.model import (
    NOWHERE,
    BackendRef,
    Filter,
    FilterKind,
    HeaderMatch,
    HeaderRoute,
    Match,
    PolicySet,
    Problem,
    RequestMirror,
    Route,
    Rule,
    SessionAffinity,
    ValueKind,
)


@dataclasses.dataclass(frozen=True, slots=True)
class Overlay:
    """What one release changes in its target route right now. Plain data; goes on the wire."""

    release: str  # "namespace/name"
    route: str  # target route id "namespace/name"
    stable: BackendRef
    canary: BackendRef
    revision: int  # the release's overlay revision; the fleet-applied barrier compares it
    canary_weight: int = 0  # percent 0..100
    header_route: HeaderRoute | None = None
    mirror_percent: float = 0.0
    preview_header: HeaderRoute | None = None
    preview_hostname: str | None = None
    sticky: bool = False

    @property
    def active(self) -> bool:
        """False when the route should be served exactly as the operator wrote it."""
        return bool(
            self.canary_weight
            or self.header_route
            or self.mirror_percent
            or self.preview_header
            or self.preview_hostname
        )


def apply_overlays(
    policies: PolicySet, overlays: tuple[Overlay, ...]
) -> tuple[PolicySet, tuple[Problem, ...]]:
    """The policy set with every active overlay applied, and a problem per overlay that could
    not be (its route or its stable backendRef is gone). Inactive overlays change nothing."""
    routes = list(policies.routes)
    problems: list[Problem] = []
    for overlay in overlays:
        if not overlay.active:
            continue
        origin = next((r.origin for r in policies.releases if r.id == overlay.release), NOWHERE)
        index = next((i for i, r in enumerate(routes) if r.id == overlay.route), None)
        if index is None:
            problems.append(Problem(origin, "spec.target", f"route {overlay.route} does not exist"))
            continue
        route = routes[index]
        rewritten, preview = _rewrite(route, overlay)
        if rewritten is None:
            problems.append(
                Problem(
                    origin,
                    "spec.stable",
                    f"route {overlay.route} has no backendRef to {overlay.stable.service}",
                )
            )
            continue
        routes[index] = rewritten
        if preview is not None:
            routes.append(preview)
    return dataclasses.replace(policies, routes=tuple(routes)), tuple(problems)


def is_stable(ref: BackendRef, stable: BackendRef) -> bool:
    """Whether a route's backendRef is the release's stable one. The release names the service;
    its clusters and cluster selector narrow the match only when it gives them."""
    return (
        ref.service == stable.service
        and ref.kind == stable.kind
        and ref.group == stable.group
        and (not stable.clusters or ref.clusters == stable.clusters)
        and (stable.cluster_selector is None or ref.cluster_selector == stable.cluster_selector)
    )


def _rewrite(route: Route, overlay: Overlay) -> tuple[Route | None, Route | None]:
    rules: list[Rule] = []
    extra: list[Rule] = []
    preview_rules: list[Rule] = []
    touched = False
    release_name = overlay.release.rpartition("/")[2]
    for index, rule in enumerate(route.rules):
        stable = next((ref for ref in rule.backend_refs if is_stable(ref, overlay.stable)), None)
        if stable is None:
            rules.append(rule)
            preview_rules.append(rule)
            continue
        touched = True
        canary = _canary_for(stable, overlay.canary)
        rules.append(_split(rule, overlay))
        base = rule.name or str(index)
        if overlay.header_route is not None:
            extra.append(_header_copy(rule, overlay.header_route, canary, f"{base}~{release_name}"))
        if overlay.preview_header is not None:
            name = f"{base}~{release_name}-preview"
            extra.append(_header_copy(rule, overlay.preview_header, canary, name))
        preview_rules.append(
            dataclasses.replace(
                rule,
                backend_refs=tuple(
                    _canary_for(ref, overlay.canary) if is_stable(ref, overlay.stable) else ref
                    for ref in rule.backend_refs
                ),
            )
        )
    if not touched:
        return None, None
    preview = None
    if overlay.preview_hostname is not None:
        preview = dataclasses.replace(
            route,
            name=f"{route.name}~preview",
            hostnames=(overlay.preview_hostname,),
            rules=tuple(preview_rules),
        )
    return dataclasses.replace(route, rules=(*rules, *extra)), preview


def _canary_for(stable: BackendRef, canary: BackendRef) -> BackendRef:
    if canary.clusters or canary.cluster_selector is not None:
        return dataclasses.replace(canary, weight=stable.weight)
    return dataclasses.replace(
        canary,
        weight=stable.weight,
        clusters=stable.clusters,
        cluster_selector=stable.cluster_selector,
    )


def _split(rule: Rule, overlay: Overlay) -> Rule:
    weight = overlay.canary_weight
    refs: list[BackendRef] = []
    for ref in rule.backend_refs:
        if is_stable(ref, overlay.stable):
            canary = _canary_for(ref, overlay.canary)
            refs.append(dataclasses.replace(canary, weight=ref.weight * weight))
            refs.append(dataclasses.replace(ref, weight=ref.weight * (100 - weight)))
        else:
            refs.append(dataclasses.replace(ref, weight=ref.weight * 100))
    divisor = math.gcd(*(ref.weight for ref in refs)) or 1
    filters = rule.filters
    if overlay.mirror_percent > 0:
        mirror = RequestMirror(backend=overlay.canary.service, percent=overlay.mirror_percent)
        filters = (*filters, Filter(FilterKind.REQUEST_MIRROR, request_mirror=mirror))
    settings = rule.settings
    if overlay.sticky and settings.affinity is None:
        affinity = SessionAffinity(kind="Cookie", name=cohorts.DEFAULT_COOKIE)
        settings = dataclasses.replace(settings, affinity=affinity)
    return dataclasses.replace(
        rule,
        backend_refs=tuple(dataclasses.replace(ref, weight=ref.weight // divisor) for ref in refs),
        filters=filters,
        settings=settings,
    )


def _header_copy(rule: Rule, header_route: HeaderRoute, canary: BackendRef, name: str) -> Rule:
    condition = header_condition(header_route)
    matches = tuple(
        dataclasses.replace(match, headers=(*match.headers, condition))
        for match in (rule.matches or (Match(),))
    )
    return dataclasses.replace(
        rule,
        name=name,
        matches=matches,
        backend_refs=(dataclasses.replace(canary, weight=1),),
    )


def header_condition(header_route: HeaderRoute) -> HeaderMatch:
    """The Gateway API header condition a header route (or cookie route) stands for."""
    if header_route.header is not None:
        return HeaderMatch(header_route.header, header_route.value, header_route.kind)
    value = header_route.value
    value = re.escape(value) if header_route.kind is ValueKind.EXACT else f"(?:{value})"
    cookie = re.escape(header_route.cookie or "")
    return HeaderMatch("cookie", rf"^(?:.*;)?\s*{cookie}={value}\s*(?:;.*)?$", ValueKind.REGEX)
