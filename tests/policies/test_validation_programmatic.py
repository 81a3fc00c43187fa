"""policies.validation of programmatic policy sets: the same verdicts without YAML."""

from __future__ import annotations

import pytest

from policies import validation
from policies.model import (
    BackendRef,
    ClusterWeight,
    Filter,
    FilterKind,
    HeaderModifier,
    HeaderRoute,
    HealthCheck,
    Match,
    MemberCluster,
    Origin,
    PathKind,
    PathMatch,
    PolicySet,
    ReferenceGrant,
    Release,
    RequestMirror,
    RequestRedirect,
    Route,
    RouteKind,
    Rule,
    ServiceRef,
    Severity,
    Step,
    ValueKind,
)

ORIGIN = Origin("memory", 1, 1)
WEB = ServiceRef("shop", "web", 80)


def route(*rules: Rule, namespace: str = "shop") -> Route:
    return Route(RouteKind.TRAFFIC_POLICY, namespace, "r", (), rules, origin=ORIGIN)


def rule(
    *,
    matches: tuple[Match, ...] = (),
    filters: tuple[Filter, ...] = (),
    refs: tuple[BackendRef, ...] = (BackendRef(WEB),),
) -> Rule:
    return Rule(None, matches, filters, refs)


CLUSTERS = (MemberCluster("east", {}, services=()),)

PROGRAMMATIC = [
    pytest.param(
        route(rule(refs=(BackendRef(WEB, weight=-3),))),
        "spec.rules[0].backendRefs[0].weight: must be an integer 0..1000000, got -3",
        id="weight",
    ),
    pytest.param(
        route(rule(refs=(BackendRef(WEB, clusters=(ClusterWeight("east", weight=-1),)),))),
        "spec.rules[0].backendRefs[0].clusters[0].weight: must be an integer 0..1000000, got -1",
        id="cluster-weight",
    ),
    pytest.param(
        route(rule(refs=(BackendRef(WEB, kind="Pod"),))),
        "spec.rules[0].backendRefs[0].kind: must be Service or ServiceImport, got 'Pod'",
        id="kind",
    ),
    pytest.param(
        route(rule(matches=(Match(method="FETCH"),))),
        "spec.rules[0].matches[0].method: must be one of GET, HEAD, POST, PUT, DELETE, CONNECT, "
        "OPTIONS, TRACE, PATCH, got 'FETCH'",
        id="method",
    ),
    pytest.param(
        route(rule(matches=(Match(PathMatch(PathKind.EXACT, "")),))),
        'spec.rules[0].matches[0].path.value: must start with "/", got ""',
        id="empty-path",
    ),
    pytest.param(
        route(
            rule(
                refs=(),
                filters=(
                    Filter(
                        FilterKind.REQUEST_REDIRECT, request_redirect=RequestRedirect(scheme="ftp")
                    ),
                ),
            )
        ),
        "spec.rules[0].filters[0].requestRedirect.scheme: must be http or https, got 'ftp'",
        id="scheme",
    ),
    pytest.param(
        route(
            rule(
                refs=(),
                filters=(
                    Filter(
                        FilterKind.REQUEST_REDIRECT, request_redirect=RequestRedirect(status=200)
                    ),
                ),
            )
        ),
        "spec.rules[0].filters[0].requestRedirect.statusCode: must be one of 301, 302, 303, 307, "
        "308, got 200",
        id="status",
    ),
    pytest.param(
        route(
            rule(
                filters=(
                    Filter(
                        FilterKind.REQUEST_MIRROR, request_mirror=RequestMirror(WEB, percent=150.0)
                    ),
                )
            )
        ),
        "spec.rules[0].filters[0].requestMirror.percent: must be 0..100, got 150",
        id="mirror-percent",
    ),
    pytest.param(
        Release(
            "shop",
            "rel",
            "r",
            BackendRef(WEB),
            BackendRef(ServiceRef("shop", "v2", 80)),
            steps=(Step(set_weight=120),),
            origin=ORIGIN,
        ),
        "spec.strategy.canary.steps[0].setWeight: must be 0..100, got 120",
        id="release-weight",
    ),
    pytest.param(
        Release(
            "shop",
            "rel",
            "r",
            BackendRef(WEB),
            BackendRef(ServiceRef("shop", "v2", 80)),
            steps=(Step(set_mirror_percent=-1.0),),
            origin=ORIGIN,
        ),
        "spec.strategy.canary.steps[0].setMirror.percent: must be 0..100, got -1",
        id="release-mirror",
    ),
    pytest.param(
        MemberCluster("west", {}, weight=-1, origin=ORIGIN),
        "spec.weight: must be an integer 0..1000000, got -1",
        id="cluster-capacity",
    ),
    pytest.param(
        MemberCluster("west", {}, health_check=HealthCheck(interval_s=0.0), origin=ORIGIN),
        "spec.healthCheck.interval: must be more than 0s, got 0s",
        id="health-interval-zero",
    ),
    pytest.param(
        MemberCluster(
            "west", {}, health_check=HealthCheck(unhealthy_interval_s=0.0), origin=ORIGIN
        ),
        "spec.healthCheck.unhealthyInterval: must be more than 0s, got 0s",
        id="health-unhealthy-interval-zero",
    ),
    pytest.param(
        MemberCluster("west", {}, health_check=HealthCheck(timeout_s=0.0), origin=ORIGIN),
        "spec.healthCheck.timeout: must be more than 0s, got 0s",
        id="health-timeout-zero",
    ),
]


@pytest.mark.parametrize(("document", "expected"), PROGRAMMATIC)
def test_programmatic_documents(document: Route | Release | MemberCluster, expected: str) -> None:
    routes = (document,) if isinstance(document, Route) else (route(rule()),)
    policies = PolicySet(
        routes=routes,
        clusters=CLUSTERS + ((document,) if isinstance(document, MemberCluster) else ()),
        releases=(document,) if isinstance(document, Release) else (),
    )
    problems = validation.validate(policies)
    errors = [f"{p.path}: {p.message}" for p in problems if p.severity is Severity.ERROR]
    assert errors == [expected]
    assert all(p.origin == ORIGIN for p in problems)


def test_check_returns_the_accepted_documents() -> None:
    good = route(rule())
    bad = Route(
        RouteKind.HTTP_ROUTE, "shop", "bad", (), (rule(refs=(BackendRef(WEB, weight=-1),)),)
    )
    grant = ReferenceGrant("other", "g", (), ())
    checked = validation.check(PolicySet(routes=(good, bad), clusters=CLUSTERS, grants=(grant,)))
    assert checked.policies.routes == (good,)
    assert checked.policies.grants == (grant,)
    assert checked.problems[0].origin.file == "<memory>"


def test_programmatic_header_route_and_release_preview() -> None:
    preview = HeaderRoute(header="x", value="[", kind=ValueKind.REGEX)
    rel = Release(
        "shop",
        "rel",
        "r",
        BackendRef(WEB),
        BackendRef(ServiceRef("shop", "v2", 80)),
        preview_header=preview,
        origin=ORIGIN,
    )
    problems = validation.validate(
        PolicySet(routes=(route(rule()),), clusters=CLUSTERS, releases=(rel,))
    )
    assert [p.path for p in problems if p.severity is Severity.ERROR] == [
        "spec.strategy.blueGreen.previewHeader.headerValue.regex"
    ]


def test_programmatic_modifier_names_compare_case_insensitively() -> None:
    modifier = HeaderModifier(set=(("X-A", "1"),), remove=("x-a",))
    filt = Filter(FilterKind.RESPONSE_HEADER_MODIFIER, response_header_modifier=modifier)
    problems = validation.validate(
        PolicySet(routes=(route(rule(filters=(filt,))),), clusters=CLUSTERS)
    )
    assert [p.message for p in problems if p.severity is Severity.ERROR] == [
        'header "x-a" appears in set and in remove'
    ]
