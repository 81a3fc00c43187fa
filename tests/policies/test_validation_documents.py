"""policies.validation across documents: duplicate names, clusters, hostname ownership between
namespaces, ReferenceGrants, warnings about services, and Releases."""

from __future__ import annotations

import pytest

from policies import loading
from policies.model import ServiceRef, Severity
from tests.policies.validation_builders import FLEET, doc, load, messages, rule_policy

# Across documents


def test_duplicate_names_reject_the_later_document() -> None:
    first = rule_policy("backendRefs: [{name: web, port: 80}]")
    cluster = (
        "apiVersion: fleetgate.io/v1alpha1\nkind: MemberCluster\nmetadata: {name: east}\nspec: {}\n"
    )
    result = load(first, first, cluster)
    assert messages(result) == [
        "metadata.name: TrafficPolicy shop/web is already defined at f.yaml:18:1",
        "metadata.name: east is already defined at f.yaml:1:1",
    ]
    assert len(result.policies.routes) == 1
    assert [c.name for c in result.policies.clusters] == ["east", "west"]


def test_same_name_in_another_kind_or_namespace_is_not_a_duplicate() -> None:
    route = doc("HTTPRoute", "web", "rules: [{backendRefs: [{name: web, port: 80}]}]")
    policy = rule_policy("backendRefs: [{name: web, port: 80}]")
    elsewhere = doc("TrafficPolicy", "web", "rules: [{}]", namespace="other")
    result = load(route, policy, elsewhere)
    assert messages(result) == []
    assert len(result.policies.routes) == 3


def test_duplicate_grants_and_releases() -> None:
    grant = doc(
        "ReferenceGrant",
        "g",
        "from: [{group: '', kind: HTTPRoute, namespace: a}]\nto: [{group: '', kind: Service}]",
    )
    result = load(grant, grant)
    assert messages(result) == ["metadata.name: shop/g is already defined at f.yaml:18:1"]
    assert len(result.policies.grants) == 1


def test_unknown_cluster_name() -> None:
    result = load(rule_policy("backendRefs: [{name: web, port: 80, clusters: [{name: esat}]}]"))
    assert messages(result) == [
        'spec.rules[0].backendRefs[0].clusters[0].name: no MemberCluster is named "esat"; '
        'did you mean "east"?'
    ]
    assert result.policies.routes == ()


def test_unknown_cluster_name_without_a_close_match() -> None:
    result = load(rule_policy("backendRefs: [{name: web, port: 80, clusters: [{name: zzz}]}]"))
    assert messages(result) == [
        'spec.rules[0].backendRefs[0].clusters[0].name: no MemberCluster is named "zzz"'
    ]


def test_hostname_belongs_to_the_first_namespace() -> None:
    first = doc("TrafficPolicy", "a", "hostnames: [shop.example.com]\nrules: [{}]")
    same_ns = doc("HTTPRoute", "b", "hostnames: [shop.example.com]\nrules: [{}]")
    other = doc(
        "HTTPRoute",
        "c",
        "hostnames: [other.example.com, shop.example.com]\nrules: [{}]",
        namespace="team",
    )
    result = load(first, same_ns, other)
    assert messages(result) == [
        'spec.hostnames[1]: hostname "shop.example.com" belongs to namespace "shop" '
        "(TrafficPolicy shop/a at f.yaml:18:1)"
    ]
    assert sorted(r.id for r in result.policies.routes) == ["shop/a", "shop/b"]
    errors = [p for p in result.problems if p.severity is Severity.ERROR]
    assert (errors[0].origin.line, errors[0].origin.column) == (36, 34)


def test_hostname_ownership_follows_creation_time_not_file_order() -> None:
    newer = doc(
        "HTTPRoute",
        "newer",
        "hostnames: [shop.example.com]",
        extra=", creationTimestamp: 2024-06-01T00:00:00Z",
    )
    older = doc(
        "HTTPRoute",
        "older",
        "hostnames: [shop.example.com]",
        namespace="team",
        extra=", creationTimestamp: 2024-01-01T00:00:00Z",
    )
    result = load(newer, older)
    assert [p.message for p in result.problems if p.severity is Severity.ERROR] == [
        'hostname "shop.example.com" belongs to namespace "team" (HTTPRoute team/older at '
        "f.yaml:24:1)"
    ]
    assert [r.id for r in result.policies.routes] == ["team/older"]


def test_a_rejected_route_claims_no_hostname() -> None:
    broken = doc(
        "TrafficPolicy",
        "a",
        "hostnames: [x.example.com]\n"
        "rules: [{backendRefs: [{name: web, port: 80, clusters: [{name: nope}]}]}]",
    )
    later = doc("HTTPRoute", "b", "hostnames: [x.example.com]", namespace="team")
    result = load(broken, later)
    assert [r.id for r in result.policies.routes] == ["team/b"]


GRANT = """\
from:
  - {group: fleetgate.io, kind: TrafficPolicy, namespace: shop}
  - {group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shop}
to:
  - {group: "", kind: Service, name: db}
"""


def test_cross_namespace_reference_without_grant_is_refused_but_the_route_loads() -> None:
    rule = "backendRefs: [{name: web, port: 80}, {name: db, namespace: other, port: 5432}]"
    result = load(rule_policy(rule))
    assert messages(result) == [
        'spec.rules[0].backendRefs[1].namespace: no ReferenceGrant in namespace "other" lets a '
        'TrafficPolicy in "shop" use Service "db"'
    ]
    assert not result.ok
    assert [r.id for r in result.policies.routes] == ["shop/web"]
    assert result.refused == frozenset({("shop/web", ServiceRef("other", "db", 5432))})


def test_cross_namespace_reference_with_grant() -> None:
    rule = "backendRefs: [{name: db, namespace: other, port: 5432}]"
    route = doc(
        "HTTPRoute", "r", "rules: [{backendRefs: [{name: db, namespace: other, port: 5432}]}]"
    )
    result = load(rule_policy(rule), route, doc("ReferenceGrant", "g", GRANT, namespace="other"))
    assert result.problems == ()
    assert result.refused == frozenset()


@pytest.mark.parametrize(
    ("grant", "why"),
    [
        pytest.param(
            GRANT.replace(
                "namespace: shop}\n  - {group: gateway", "namespace: x}\n  - {group: gateway"
            ),
            "namespace",
            id="other-from-namespace",
        ),
        pytest.param(GRANT.replace("name: db", "name: cache"), "service", id="other-service"),
        pytest.param(
            GRANT.replace("kind: TrafficPolicy", "kind: HTTPRoute"), "kind", id="other-kind"
        ),
    ],
)
def test_grant_that_does_not_match(grant: str, why: str) -> None:
    rule = "backendRefs: [{name: db, namespace: other, port: 5432}]"
    result = load(rule_policy(rule), doc("ReferenceGrant", "g", grant, namespace="other"))
    assert len(messages(result)) == 1, why
    assert result.refused == frozenset({("shop/web", ServiceRef("other", "db", 5432))})


def test_grant_in_the_wrong_namespace_does_not_count() -> None:
    rule = "backendRefs: [{name: db, namespace: other, port: 5432}]"
    result = load(rule_policy(rule), doc("ReferenceGrant", "g", GRANT, namespace="shop"))
    assert len(result.refused) == 1


def test_cross_namespace_mirror_needs_a_grant_too() -> None:
    rule = (
        "filters:\n  - type: RequestMirror\n"
        "    requestMirror: {backendRef: {name: db, namespace: other, port: 5432}}\n"
        "backendRefs: [{name: web, port: 80}]"
    )
    result = load(rule_policy(rule))
    assert messages(result) == [
        "spec.rules[0].filters[0].requestMirror.backendRef.namespace: no ReferenceGrant in "
        'namespace "other" lets a TrafficPolicy in "shop" use Service "db"'
    ]
    assert len(result.policies.routes) == 1


# ---------------------------------------------------------------------------------------------
# Warnings about services


WARNINGS = [
    pytest.param(
        "backendRefs: [{name: nope, port: 80}]",
        "spec.rules[0].backendRefs[0]: no MemberCluster is known to have Service shop/nope: its "
        "share of requests gets 500",
        id="unknown-service",
    ),
    pytest.param(
        "backendRefs: [{name: web, port: 81}]",
        "spec.rules[0].backendRefs[0]: Service shop/web has no port 81 in any MemberCluster "
        "(ports: 80)",
        id="unknown-port",
    ),
    pytest.param(
        "backendRefs: [{name: web-v2, port: 80, clusters: [{name: west}]}]",
        "spec.rules[0].backendRefs[0]: no MemberCluster is known to have Service shop/web-v2: "
        "its share of requests gets 500",
        id="not-in-the-listed-cluster",
    ),
    pytest.param(
        "backendRefs: [{name: web, port: 80, clusterSelector: {matchLabels: {region: mars}}}]",
        "spec.rules[0].backendRefs[0].clusterSelector: matches no MemberCluster",
        id="selector-matches-nothing",
    ),
    pytest.param(
        "backendRefs:\n"
        "  - {name: web-v2, port: 80, clusterSelector: {matchLabels: {region: us-west}}}",
        "spec.rules[0].backendRefs[0]: no MemberCluster is known to have Service shop/web-v2: "
        "its share of requests gets 500",
        id="not-in-the-selected-cluster",
    ),
]


@pytest.mark.parametrize(("rule", "expected"), WARNINGS)
def test_service_warnings(rule: str, expected: str) -> None:
    result = load(rule_policy(rule))
    assert result.ok
    assert messages(result, Severity.WARNING) == [expected]
    assert len(result.policies.routes) == 1
    assert str(result.problems[0]).split(": ")[1] == "warning"


def test_known_services_raise_no_warning() -> None:
    rule = (
        "backendRefs:\n"
        "  - {name: web, port: 80, clusters: [{name: east}, {name: west, priority: 0}]}\n"
        "  - {name: web-v2, port: 80, clusterSelector: {matchLabels: {region: us-east}}}\n"
    )
    assert load(rule_policy(rule)).problems == ()


def test_no_warning_when_a_cluster_discovers_its_services() -> None:
    discovering = (
        "apiVersion: fleetgate.io/v1alpha1\nkind: MemberCluster\nmetadata: {name: k8s}\n"
        "spec: {kubeconfig: /etc/k8s.kubeconfig}\n"
    )
    result = load(discovering, rule_policy("backendRefs: [{name: anything, port: 8080}]"))
    assert result.problems == ()


# ---------------------------------------------------------------------------------------------
# Releases


def release(spec: str, *, name: str = "r") -> str:
    return doc("Release", name, spec)


RELEASE_BASE = """\
target: web
stable: {backendRef: {name: web, port: 80}}
canary: {backendRef: {name: web-v2, port: 80}}
"""
STEPS = "strategy: {canary: {steps: [{setWeight: 50}]}}\n"
TARGET = rule_policy("backendRefs: [{name: web, port: 80}]")

RELEASE_ERRORS = [
    pytest.param(
        RELEASE_BASE.replace("target: web", "target: nope") + STEPS,
        'spec.target: no route named "nope" in namespace "shop"',
        id="no-target",
    ),
    pytest.param(
        RELEASE_BASE.replace("port: 80}", "port: 81}", 1) + STEPS,
        "spec.stable.backendRef: shop/web:81 is not a backendRef of TrafficPolicy shop/web",
        id="stable-not-in-target",
    ),
    pytest.param(
        RELEASE_BASE + "strategy: {canary: {steps: [{analysis: {}}]}}",
        "spec.strategy.canary.steps[0].analysis: an analysis step needs spec.analysis",
        id="analysis-step-without-analysis",
    ),
    pytest.param(
        RELEASE_BASE + STEPS + "abort: {rampSteps: [50, 60]}",
        "spec.abort.rampSteps[1]: must go down from 100 towards 0, got 60",
        id="ramp-goes-up",
    ),
    pytest.param(
        RELEASE_BASE + STEPS + "analysis: {prometheus: {address: 'prom:9090', query: up}}",
        'spec.analysis.prometheus.address: must be an http:// or https:// URL, got "prom:9090"',
        id="prometheus-address",
    ),
    pytest.param(
        RELEASE_BASE.replace("web-v2", "web") + STEPS,
        "spec.canary.backendRef: must differ from spec.stable.backendRef",
        id="canary-is-stable",
    ),
    pytest.param(
        RELEASE_BASE + "strategy:\n  canary:\n    steps:\n      - setHeaderRoute:\n"
        "          match: [{headerName: x, headerValue: {regex: '('}}]",
        "spec.strategy.canary.steps[0].setHeaderRoute.match[0].headerValue.regex: invalid "
        "regular expression '(': missing ), unterminated subpattern at position 0",
        id="header-route-regex",
    ),
    pytest.param(
        RELEASE_BASE
        + "strategy:\n  blueGreen:\n    previewHeader: {cookieName: c, cookieValue: {regex: '*'}}",
        "spec.strategy.blueGreen.previewHeader.cookieValue.regex: invalid regular expression "
        "'*': nothing to repeat at position 0",
        id="preview-cookie-regex",
    ),
    pytest.param(
        RELEASE_BASE.replace("port: 80}}\ncanary", "port: 80, clusters: [{name: mars}]}}\ncanary")
        + STEPS,
        'spec.stable.backendRef.clusters[0].name: no MemberCluster is named "mars"',
        id="unknown-cluster",
    ),
    pytest.param(
        RELEASE_BASE.replace("name: web-v2, port: 80", "name: db, namespace: other, port: 5432")
        + STEPS,
        'spec.canary.backendRef.namespace: no ReferenceGrant in namespace "other" lets a '
        'Release in "shop" use Service "db"',
        id="cross-namespace",
    ),
]


@pytest.mark.parametrize(("spec", "expected"), RELEASE_ERRORS)
def test_release_errors(spec: str, expected: str) -> None:
    result = load(TARGET, release(spec))
    assert messages(result) == [expected]
    assert result.policies.releases == ()
    assert len(result.policies.routes) == 1


def test_release_target_that_names_two_routes() -> None:
    route = doc("HTTPRoute", "web", "rules: [{backendRefs: [{name: web, port: 80}]}]")
    result = load(TARGET, route, release(RELEASE_BASE + STEPS))
    assert messages(result) == ['spec.target: "web" names both an HTTPRoute and a TrafficPolicy']


def test_one_release_per_route() -> None:
    result = load(TARGET, release(RELEASE_BASE + STEPS), release(RELEASE_BASE + STEPS, name="s"))
    assert messages(result) == [
        "spec.target: route web is already released by shop/r at f.yaml:26:1"
    ]
    assert [r.name for r in result.policies.releases] == ["r"]


def test_same_route_name_in_two_namespaces_takes_a_release_each() -> None:
    services = "".join(
        f"    - {{namespace: pay, name: {n}, ports: [{{port: 80, endpoints: ['127.0.1.1:80']}}]}}\n"
        for n in ("web", "web-v2")
    )
    fleet = FLEET.replace("  services:\n", "  services:\n" + services, 1)
    other = doc(
        "TrafficPolicy", "web", "rules: [{backendRefs: [{name: web, port: 80}]}]", namespace="pay"
    )
    pay = doc("Release", "r", RELEASE_BASE + STEPS, namespace="pay")
    documents = (fleet, TARGET, other, release(RELEASE_BASE + STEPS), pay)
    result = loading.load_documents([("f.yaml", "---\n".join(documents))])
    assert messages(result) == []
    assert sorted(r.id for r in result.policies.releases) == ["pay/r", "shop/r"]


def test_release_to_an_unknown_service_is_a_warning() -> None:
    spec = RELEASE_BASE.replace("web-v2", "web-v3") + STEPS
    result = load(TARGET, release(spec))
    assert messages(result, Severity.WARNING) == [
        "spec.canary.backendRef: no MemberCluster is known to have Service shop/web-v3: its "
        "share of requests gets 500"
    ]
    assert len(result.policies.releases) == 1


# ---------------------------------------------------------------------------------------------
