"""Overlay rewrite of a PolicySet: weights, header route, mirror, preview, stickiness."""

from __future__ import annotations

import dataclasses
import re

import pytest

from policies import cohorts, overlays
from policies.model import (
    BackendRef,
    ClusterWeight,
    Filter,
    FilterKind,
    HeaderMatch,
    HeaderModifier,
    HeaderRoute,
    Match,
    Origin,
    PathKind,
    PathMatch,
    PolicySet,
    Release,
    RequestMirror,
    Route,
    RouteKind,
    Rule,
    ServiceRef,
    SessionAffinity,
    TrafficSettings,
    ValueKind,
)
from policies.overlays import Overlay

V1 = ServiceRef("shop", "web-v1", 80)
V2 = ServiceRef("shop", "web-v2", 80)
OTHER = ServiceRef("shop", "legacy", 80)
STABLE = BackendRef(V1)
CANARY = BackendRef(V2)
API = Match(path=PathMatch(PathKind.PREFIX, "/api"))
ADD_HEADER = Filter(
    FilterKind.REQUEST_HEADER_MODIFIER,
    request_header_modifier=HeaderModifier(set=(("x-env", "prod"),)),
)
ROUTE = Route(
    kind=RouteKind.TRAFFIC_POLICY,
    namespace="shop",
    name="web",
    hostnames=("shop.example.com",),
    rules=(
        Rule(name=None, matches=(API,), filters=(ADD_HEADER,), backend_refs=(STABLE,)),
        Rule(name="static", matches=(), filters=(), backend_refs=(BackendRef(OTHER),)),
    ),
)
ORIGIN = Origin("release.yaml", 3, 1)
RELEASE = Release("shop", "web-v2", "web", STABLE, CANARY, origin=ORIGIN)
POLICIES = PolicySet(routes=(ROUTE,), releases=(RELEASE,))


def _overlay(**fields: object) -> Overlay:
    base = Overlay("shop/web-v2", "shop/web", STABLE, CANARY, revision=1)
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


def _route(policies: PolicySet, name: str = "web") -> Route:
    return next(r for r in policies.routes if r.name == name)


def _weights(rule: Rule) -> list[tuple[str, int]]:
    return [(ref.service.name, ref.weight) for ref in rule.backend_refs]


@pytest.mark.parametrize(
    ("weight", "expected"),
    [
        pytest.param(10, [("web-v2", 1), ("web-v1", 9)], id="10"),
        pytest.param(50, [("web-v2", 1), ("web-v1", 1)], id="50"),
        pytest.param(33, [("web-v2", 33), ("web-v1", 67)], id="33"),
        pytest.param(100, [("web-v2", 1), ("web-v1", 0)], id="100-keeps-stable-warm-at-0"),
    ],
)
def test_weight_splits_the_stable_backend_ref_canary_first(
    weight: int, expected: list[tuple[str, int]]
) -> None:
    rewritten, problems = overlays.apply_overlays(POLICIES, (_overlay(canary_weight=weight),))
    assert problems == ()
    route = _route(rewritten)
    assert _weights(route.rules[0]) == expected
    assert route.rules[0].filters == (ADD_HEADER,)  # the operator's filters stay
    assert route.rules[1] == ROUTE.rules[1]  # rules without the stable ref are untouched
    assert len(route.rules) == 2


def test_other_backend_refs_keep_their_share() -> None:
    rule = Rule(None, (), (), (BackendRef(OTHER, weight=1), BackendRef(V1, weight=3)))
    policies = PolicySet(routes=(dataclasses.replace(ROUTE, rules=(rule,)),))
    rewritten, _ = overlays.apply_overlays(policies, (_overlay(canary_weight=20),))
    # legacy keeps 1/4; web-v1's 3/4 is split 20/80.
    assert _weights(_route(rewritten).rules[0]) == [("legacy", 5), ("web-v2", 3), ("web-v1", 12)]


def test_the_operators_policy_set_is_not_modified() -> None:
    before = dataclasses.replace(POLICIES)
    overlays.apply_overlays(POLICIES, (_overlay(canary_weight=50),))
    assert before == POLICIES


def test_an_inactive_overlay_serves_the_route_as_written() -> None:
    rewritten, problems = overlays.apply_overlays(POLICIES, (_overlay(canary_weight=0),))
    assert (rewritten, problems) == (POLICIES, ())
    assert not _overlay().active


def test_a_sticky_user_lands_on_canary_exactly_when_their_point_is_below_the_weight() -> None:
    rewritten, _ = overlays.apply_overlays(POLICIES, (_overlay(canary_weight=10, sticky=True),))
    rule = _route(rewritten).rules[0]
    assert rule.settings.affinity == SessionAffinity("Cookie", cohorts.DEFAULT_COOKIE)
    total = sum(ref.weight for ref in rule.backend_refs)
    for i in range(500):
        key = f"user-{i}"
        roll = cohorts.roll_for(key, salt="shop/web")
        first = rule.backend_refs[0]  # the weighted pick: canary's slice comes first
        picked_canary = roll * total < first.weight
        assert first.service == V2
        assert picked_canary == cohorts.in_canary(key, 10, salt="shop/web")


def test_stickiness_reuses_the_rules_own_affinity_key() -> None:
    own = SessionAffinity("Header", "x-user-id")
    rule = dataclasses.replace(ROUTE.rules[0], settings=TrafficSettings(affinity=own))
    policies = PolicySet(routes=(dataclasses.replace(ROUTE, rules=(rule,)),))
    rewritten, _ = overlays.apply_overlays(policies, (_overlay(canary_weight=10, sticky=True),))
    assert _route(rewritten).rules[0].settings.affinity == own


def test_header_route_adds_a_rule_copy_with_one_more_header_condition() -> None:
    header = HeaderRoute(header="x-canary", value="always")
    rewritten, _ = overlays.apply_overlays(POLICIES, (_overlay(header_route=header),))
    route = _route(rewritten)
    # Weight 0: everybody else stays on stable; canary is listed at 0 so it is health-checked.
    assert _weights(route.rules[0]) == [("web-v2", 0), ("web-v1", 1)]
    assert route.rules[1] == ROUTE.rules[1]
    copy = route.rules[2]  # appended, so existing rule ids do not shift
    assert copy.name == "0~web-v2"
    assert copy.matches == (dataclasses.replace(API, headers=(HeaderMatch("x-canary", "always"),)),)
    assert copy.backend_refs == (BackendRef(V2, weight=1),)
    assert copy.filters == (ADD_HEADER,)
    assert len(copy.matches[0].headers) > len(API.headers)  # outranks the original


def test_header_route_on_a_rule_without_matches_matches_every_path() -> None:
    rule = Rule("all", (), (), (STABLE,))
    policies = PolicySet(routes=(dataclasses.replace(ROUTE, rules=(rule,)),))
    header = HeaderRoute(header="x-canary", value="always")
    rewritten, _ = overlays.apply_overlays(policies, (_overlay(header_route=header),))
    copy = _route(rewritten).rules[1]
    assert copy.name == "all~web-v2"
    assert copy.matches == (Match(headers=(HeaderMatch("x-canary", "always"),)),)


@pytest.mark.parametrize(
    ("route", "cookie_header", "matches"),
    [
        pytest.param(
            HeaderRoute(cookie="canary", value="always"), "canary=always", True, id="only"
        ),
        pytest.param(
            HeaderRoute(cookie="canary", value="always"), "a=1; canary=always; b=2", True, id="mid"
        ),
        pytest.param(
            HeaderRoute(cookie="canary", value="always"), "a=1;canary=always", True, id="last"
        ),
        pytest.param(
            HeaderRoute(cookie="canary", value="always"), "canary=alwaysx", False, id="longer"
        ),
        pytest.param(
            HeaderRoute(cookie="canary", value="always"), "xcanary=always", False, id="other-name"
        ),
        pytest.param(
            HeaderRoute(cookie="canary", value="never"), "canary=always", False, id="other-value"
        ),
        pytest.param(
            HeaderRoute(cookie="grp", value="beta|qa", kind=ValueKind.REGEX),
            "sid=9; grp=qa",
            True,
            id="regex-value",
        ),
        pytest.param(
            HeaderRoute(cookie="grp", value="beta|qa", kind=ValueKind.REGEX),
            "grp=prod",
            False,
            id="regex-value-miss",
        ),
    ],
)
def test_cookie_routes_match_the_cookie_header(
    route: HeaderRoute, cookie_header: str, matches: bool
) -> None:
    condition = overlays.header_condition(route)
    assert (condition.name, condition.kind) == ("cookie", ValueKind.REGEX)
    # Anchored: the same answer whether the matcher searches or matches the whole value.
    assert (re.fullmatch(condition.value, cookie_header) is not None) is matches
    assert (re.search(condition.value, cookie_header) is not None) is matches


def test_mirror_adds_a_request_mirror_filter_to_canary() -> None:
    rewritten, _ = overlays.apply_overlays(POLICIES, (_overlay(mirror_percent=25.0),))
    rule = _route(rewritten).rules[0]
    assert rule.filters == (
        ADD_HEADER,
        Filter(FilterKind.REQUEST_MIRROR, request_mirror=RequestMirror(V2, 25.0)),
    )


def test_blue_green_preview_by_header_and_by_hostname() -> None:
    overlay = _overlay(
        preview_header=HeaderRoute(header="x-preview", value="1"),
        preview_hostname="preview.shop.example.com",
    )
    rewritten, problems = overlays.apply_overlays(POLICIES, (overlay,))
    assert problems == ()
    live = _route(rewritten)
    assert _weights(live.rules[0]) == [("web-v2", 0), ("web-v1", 1)]  # all users stay on blue
    assert live.rules[2].name == "0~web-v2-preview"
    assert live.rules[2].matches[0].headers == (HeaderMatch("x-preview", "1"),)
    preview = _route(rewritten, "web~preview")
    assert preview.id == "shop/web~preview"
    assert preview.hostnames == ("preview.shop.example.com",)
    assert _weights(preview.rules[0]) == [("web-v2", 1)]
    assert preview.rules[1] == ROUTE.rules[1]


def test_canary_inherits_the_stable_spread_unless_it_names_its_own() -> None:
    spread = (ClusterWeight("a", 3), ClusterWeight("b", 1))
    rule = Rule(None, (), (), (BackendRef(V1, clusters=spread),))
    policies = PolicySet(routes=(dataclasses.replace(ROUTE, rules=(rule,)),))
    rewritten, _ = overlays.apply_overlays(policies, (_overlay(canary_weight=50),))
    assert _route(rewritten).rules[0].backend_refs[0] == BackendRef(V2, clusters=spread)
    # A new cluster, same version: the canary names where it runs.
    new_cluster = BackendRef(V1, clusters=(ClusterWeight("c"),))
    overlay = _overlay(canary=new_cluster, canary_weight=50)
    rewritten, _ = overlays.apply_overlays(policies, (overlay,))
    assert _route(rewritten).rules[0].backend_refs == (
        BackendRef(V1, clusters=(ClusterWeight("c"),)),
        BackendRef(V1, clusters=spread),
    )


@pytest.mark.parametrize(
    ("ref", "release_stable", "expected"),
    [
        pytest.param(BackendRef(V1), BackendRef(V1, weight=7), True, id="weight-ignored"),
        pytest.param(BackendRef(OTHER), BackendRef(V1), False, id="other-service"),
        pytest.param(BackendRef(V1, kind="ServiceImport"), BackendRef(V1), False, id="kind"),
        pytest.param(
            BackendRef(V1, clusters=(ClusterWeight("a"),)), BackendRef(V1), True, id="any-spread"
        ),
        pytest.param(
            BackendRef(V1, clusters=(ClusterWeight("a"),)),
            BackendRef(V1, clusters=(ClusterWeight("b"),)),
            False,
            id="other-clusters",
        ),
        pytest.param(
            BackendRef(V1, cluster_selector={"region": "eu"}),
            BackendRef(V1, cluster_selector={"region": "us"}),
            False,
            id="other-selector",
        ),
        pytest.param(
            BackendRef(V1, cluster_selector={"region": "eu"}),
            BackendRef(V1, cluster_selector={"region": "eu"}),
            True,
            id="same-selector",
        ),
    ],
)
def test_is_stable(ref: BackendRef, release_stable: BackendRef, expected: bool) -> None:
    assert overlays.is_stable(ref, release_stable) is expected


def test_overlays_that_cannot_apply_are_reported_at_the_release() -> None:
    gone = _overlay(route="shop/gone", canary_weight=10)
    no_stable = _overlay(stable=BackendRef(ServiceRef("shop", "nope", 80)), canary_weight=10)
    stranger = _overlay(release="shop/unknown", route="shop/gone", canary_weight=10)
    rewritten, problems = overlays.apply_overlays(POLICIES, (gone, no_stable, stranger))
    assert rewritten == POLICIES
    assert [(p.origin, p.path) for p in problems] == [
        (ORIGIN, "spec.target"),
        (ORIGIN, "spec.stable"),
        (Origin("<memory>", 0, 0), "spec.target"),
    ]
    assert str(problems[0]) == "release.yaml:3:1: spec.target: route shop/gone does not exist"
    assert "has no backendRef to shop/nope:80" in problems[1].message


def test_overlays_on_different_routes_apply_independently() -> None:
    api = dataclasses.replace(ROUTE, name="api")
    policies = PolicySet(routes=(ROUTE, api))
    other = _overlay(release="shop/api-v2", route="shop/api", canary_weight=50)
    rewritten, _ = overlays.apply_overlays(policies, (_overlay(canary_weight=10), other))
    assert _weights(_route(rewritten, "web").rules[0]) == [("web-v2", 1), ("web-v1", 9)]
    assert _weights(_route(rewritten, "api").rules[0]) == [("web-v2", 1), ("web-v1", 1)]
