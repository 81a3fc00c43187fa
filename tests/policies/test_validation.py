"""policies.validation: every rule, alone and across documents, with the field it names."""

from __future__ import annotations

import textwrap

import pytest

from policies import loading, validation
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

FLEET = """\
apiVersion: fleetgate.io/v1alpha1
kind: MemberCluster
metadata: {name: east, labels: {region: us-east}}
spec:
  services:
    - {namespace: shop, name: web, ports: [{port: 80, endpoints: ["127.0.1.1:8080"]}]}
    - {namespace: shop, name: web-v2, ports: [{port: 80, endpoints: ["127.0.1.1:8081"]}]}
    - {namespace: other, name: db, ports: [{port: 5432, endpoints: ["127.0.1.1:5432"]}]}
---
apiVersion: fleetgate.io/v1alpha1
kind: MemberCluster
metadata: {name: west, labels: {region: us-west}}
spec:
  priority: 1
  services:
    - {namespace: shop, name: web, ports: [{port: 80, endpoints: ["127.0.2.1:8080"]}]}
"""


def doc(kind: str, name: str, spec: str, *, namespace: str = "shop", extra: str = "") -> str:
    api = {
        "HTTPRoute": "gateway.networking.k8s.io/v1",
        "ReferenceGrant": "gateway.networking.k8s.io/v1beta1",
    }.get(kind, "fleetgate.io/v1alpha1")
    return (
        f"apiVersion: {api}\nkind: {kind}\n"
        f"metadata: {{name: {name}, namespace: {namespace}{extra}}}\nspec:\n"
        + textwrap.indent(textwrap.dedent(spec).rstrip("\n") + "\n", "  ")
    )


def rule_policy(rule: str, *, name: str = "web") -> str:
    """A TrafficPolicy with one rule (given as YAML for the rule's fields)."""
    body = textwrap.indent(textwrap.dedent(rule).rstrip("\n") + "\n", "    ")
    return doc("TrafficPolicy", name, "rules:\n  -\n" + body)


def load(*documents: str) -> loading.LoadResult:
    return loading.load_documents([("f.yaml", "---\n".join((FLEET, *documents)))])


def messages(result: loading.LoadResult, severity: Severity = Severity.ERROR) -> list[str]:
    return [f"{p.path}: {p.message}" for p in result.problems if p.severity is severity]


# ---------------------------------------------------------------------------------------------
# One rule at a time (documents on their own)

RULES = [
    pytest.param(
        "matches: [{path: {type: RegularExpression, value: 'a**'}}]\n"
        "backendRefs: [{name: web, port: 80}]",
        "spec.rules[0].matches[0].path.value: invalid regular expression 'a**': "
        "multiple repeat at position 2",
        id="bad-path-regex",
    ),
    pytest.param(
        "matches: [{headers: [{name: x, type: RegularExpression, value: '('}]}]\n"
        "backendRefs: [{name: web, port: 80}]",
        "spec.rules[0].matches[0].headers[0].value: invalid regular expression '(': "
        "missing ), unterminated subpattern at position 0",
        id="bad-header-regex",
    ),
    pytest.param(
        "matches: [{queryParams: [{name: q, type: RegularExpression, value: '[z-a]'}]}]\n"
        "backendRefs: [{name: web, port: 80}]",
        "spec.rules[0].matches[0].queryParams[0].value: invalid regular expression '[z-a]': "
        "bad character range z-a at position 1",
        id="bad-query-regex",
    ),
    *[
        pytest.param(
            f"matches: [{{path: {{type: {kind}, value: '{value}'}}}}]\n"
            "backendRefs: [{name: web, port: 80}]",
            f"spec.rules[0].matches[0].path.value: {message}",
            id=f"{kind}-{ident}",
        )
        for kind in ("Exact", "PathPrefix")
        for value, message, ident in (
            ("a", 'must start with "/", got "a"', "relative"),
            ("/a//b", 'must not contain "//", got "/a//b"', "double-slash"),
            ("/a/./b", 'must not contain "/./", got "/a/./b"', "dot"),
            ("/a/../b", 'must not contain "/../", got "/a/../b"', "dot-dot"),
            ("/a%2fb", 'must not contain "%2f", got "/a%2fb"', "encoded-slash"),
            ("/a%2Fb", 'must not contain "%2F", got "/a%2Fb"', "encoded-slash-upper"),
            ("/a#b", 'must not contain "#", got "/a#b"', "fragment"),
            ("/a/.", 'must not end with "/." or "/..", got "/a/."', "trailing-dot"),
            ("/a/..", 'must not end with "/." or "/..", got "/a/.."', "trailing-dot-dot"),
            ("/a b", 'must use only URL path characters, got "/a b"', "space"),
            ("/a%zz", 'must use only URL path characters, got "/a%zz"', "bad-escape"),
        )
    ],
    pytest.param(
        "matches: [{method: get}]\nbackendRefs: [{name: web, port: 80}]",
        "spec.rules[0].matches[0].method: must be one of GET, HEAD, POST, PUT, DELETE, CONNECT, "
        'OPTIONS, TRACE, PATCH, got "get"; did you mean "GET"?',
        id="method",
    ),
    pytest.param(
        "backendRefs: [{name: web, port: 80, weight: 1000001}]",
        "spec.rules[0].backendRefs[0].weight: must be an integer 0..1000000, got 1000001",
        id="weight-too-big",
    ),
    pytest.param(
        "backendRefs: [{name: web, port: 80, weight: -1}]",
        "spec.rules[0].backendRefs[0].weight: must be an integer 0..1000000, got -1",
        id="weight-negative",
    ),
    pytest.param(
        "backendRefs: [{name: web, port: 80, clusters: [{name: east, weight: 2000000}]}]",
        "spec.rules[0].backendRefs[0].clusters[0].weight: must be an integer 0..1000000, "
        "got 2000000",
        id="cluster-weight",
    ),
    pytest.param(
        "backendRefs: [{name: web, port: 80, clusters: [{name: east}, {name: east}]}]",
        'spec.rules[0].backendRefs[0].clusters[1].name: cluster "east" is listed twice',
        id="cluster-twice",
    ),
    *[
        pytest.param(
            f"filters: [{{type: {kind}, {field}: {{}}}}, {{type: {kind}, {field}: {{}}}}]\n"
            "backendRefs: [{name: web, port: 80}]",
            f"spec.rules[0].filters[1].type: {kind} may appear only once per rule",
            id=f"twice-{kind}",
        )
        for kind, field in (
            ("RequestHeaderModifier", "requestHeaderModifier"),
            ("ResponseHeaderModifier", "responseHeaderModifier"),
            ("URLRewrite", "urlRewrite"),
        )
    ],
    pytest.param(
        "filters: [{type: RequestRedirect, requestRedirect: {}}, "
        "{type: RequestRedirect, requestRedirect: {}}]",
        "spec.rules[0].filters[1].type: RequestRedirect may appear only once per rule",
        id="twice-RequestRedirect",
    ),
    pytest.param(
        "backendRefs:\n  - name: web\n    port: 80\n    filters:\n"
        "      - {type: RequestHeaderModifier, requestHeaderModifier: {}}\n"
        "      - {type: RequestHeaderModifier, requestHeaderModifier: {}}",
        "spec.rules[0].backendRefs[0].filters[1].type: RequestHeaderModifier may appear only "
        "once per backendRef",
        id="twice-on-backend",
    ),
    pytest.param(
        "filters:\n  - {type: URLRewrite, urlRewrite: {hostname: a.example.com}}\n"
        "  - {type: RequestRedirect, requestRedirect: {scheme: https}}",
        "spec.rules[0].filters[1]: URLRewrite and RequestRedirect cannot be combined",
        id="rewrite-then-redirect",
    ),
    pytest.param(
        "filters:\n  - {type: RequestRedirect, requestRedirect: {scheme: https}}\n"
        "  - {type: URLRewrite, urlRewrite: {hostname: a.example.com}}",
        "spec.rules[0].filters[1]: URLRewrite and RequestRedirect cannot be combined",
        id="redirect-then-rewrite",
    ),
    pytest.param(
        "filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]\n"
        "backendRefs: [{name: web, port: 80}]",
        "spec.rules[0].filters[0]: a rule with a RequestRedirect must not have backendRefs",
        id="redirect-with-backends",
    ),
    pytest.param(
        "matches: [{path: {value: /a}}, {path: {value: /b}}]\n"
        "filters:\n  - type: URLRewrite\n"
        "    urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /c}}\n"
        "backendRefs: [{name: web, port: 80}]",
        "spec.rules[0].filters[0].urlRewrite.path: ReplacePrefixMatch needs a rule with exactly "
        "one match, and a PathPrefix one (this rule has 2 match(es))",
        id="prefix-rewrite-two-matches",
    ),
    pytest.param(
        "matches: [{path: {type: Exact, value: /a}}]\n"
        "filters:\n  - type: RequestRedirect\n"
        "    requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /c}}",
        "spec.rules[0].filters[0].requestRedirect.path: ReplacePrefixMatch needs a rule with "
        "exactly one match, and a PathPrefix one (this rule has 1 match(es))",
        id="prefix-redirect-exact-match",
    ),
    pytest.param(
        "filters:\n  - type: URLRewrite\n"
        "    urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: x}}\n"
        "backendRefs: [{name: web, port: 80}]",
        'spec.rules[0].filters[0].urlRewrite.path.replaceFullPath: must start with "/", got "x"',
        id="full-path-relative",
    ),
    pytest.param(
        "filters:\n  - type: URLRewrite\n"
        "    urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: x//}}\n"
        "backendRefs: [{name: web, port: 80}]",
        "spec.rules[0].filters[0].urlRewrite.path.replacePrefixMatch: "
        'must start with "/", got "x//"',
        id="prefix-path-relative",
    ),
    pytest.param(
        "filters: [{type: RequestRedirect, requestRedirect: {statusCode: 300}}]",
        "spec.rules[0].filters[0].requestRedirect.statusCode: must be one of 301, 302, 303, "
        "307, 308, got 300",
        id="redirect-status",
    ),
    pytest.param(
        "filters: [{type: RequestRedirect, requestRedirect: {scheme: ftp}}]",
        'spec.rules[0].filters[0].requestRedirect.scheme: must be one of http, https, got "ftp"',
        id="redirect-scheme",
    ),
    pytest.param(
        "filters:\n  - type: RequestHeaderModifier\n"
        "    requestHeaderModifier:\n"
        "      set: [{name: X-A, value: '1'}]\n"
        "      add: [{name: x-a, value: '2'}]\n"
        "backendRefs: [{name: web, port: 80}]",
        'spec.rules[0].filters[0].requestHeaderModifier.add[0].name: header "x-a" appears in '
        "set and in add",
        id="header-in-two-actions",
    ),
    pytest.param(
        "filters:\n  - type: ResponseHeaderModifier\n"
        "    responseHeaderModifier: {remove: [X-A, x-a]}\n"
        "backendRefs: [{name: web, port: 80}]",
        'spec.rules[0].filters[0].responseHeaderModifier.remove[1]: header "x-a" appears twice '
        "in remove",
        id="header-twice-in-one-action",
    ),
    pytest.param(
        "backendRefs:\n  - name: web\n    port: 80\n    filters:\n"
        "      - {type: RequestRedirect, requestRedirect: {scheme: https}}",
        "spec.rules[0].backendRefs[0].filters[0].type: a backendRef supports only "
        "RequestHeaderModifier and ResponseHeaderModifier filters, got RequestRedirect",
        id="redirect-on-backend",
    ),
    pytest.param(
        "backendRefs: [{name: web, port: 80, kind: ServiceImport}]",
        'spec.rules[0].backendRefs[0].group: must be "multicluster.x-k8s.io" for a '
        'ServiceImport, got ""',
        id="service-import-group",
    ),
    pytest.param(
        "backendRefs: [{name: web, port: 80, group: multicluster.x-k8s.io}]",
        'spec.rules[0].backendRefs[0].group: must be "" for a Service, got "multicluster.x-k8s.io"',
        id="service-group",
    ),
    pytest.param(
        "filters:\n  - type: RequestMirror\n"
        "    requestMirror:\n"
        "      backendRef: {name: web, port: 80}\n"
        "      percent: 5\n"
        "      fraction: {numerator: 1}\n"
        "backendRefs: [{name: web, port: 80}]",
        'spec.rules[0].filters[0].requestMirror: give only one of "percent" or "fraction"',
        id="mirror-percent-and-fraction",
    ),
    pytest.param(
        "filters: [{type: RequestMirror}]\nbackendRefs: [{name: web, port: 80}]",
        'spec.rules[0].filters[0]: type RequestMirror needs the field "requestMirror"',
        id="filter-without-payload",
    ),
    pytest.param(
        "filters: [{type: RequestHeaderModifier, urlRewrite: {}}]\n"
        "backendRefs: [{name: web, port: 80}]",
        'spec.rules[0].filters[0].urlRewrite: "urlRewrite" is not allowed when type is '
        "RequestHeaderModifier",
        id="filter-other-payload",
    ),
]


@pytest.mark.parametrize(("rule", "expected"), RULES)
def test_rule_errors(rule: str, expected: str) -> None:
    result = load(rule_policy(rule))
    assert expected in messages(result), messages(result)
    assert result.policies.routes == ()


def test_rule_names_are_unique_within_a_route() -> None:
    policy = doc(
        "TrafficPolicy",
        "web",
        """\
        rules:
          - {name: a, backendRefs: [{name: web, port: 80}]}
          - {name: a, backendRefs: [{name: web, port: 80}]}
        """,
    )
    assert messages(load(policy)) == ['spec.rules[1].name: rule name "a" is also rule 0']


def test_repeated_match_condition_is_a_warning() -> None:
    rule = (
        "matches: [{queryParams: [{name: q, value: '1'}, {name: q, value: '2'}]}]\n"
        "backendRefs: [{name: web, port: 80}]"
    )
    result = load(rule_policy(rule))
    assert result.ok
    assert messages(result, Severity.WARNING) == [
        'spec.rules[0].matches[0].queryParams[1].name: "q" is repeated: only its first entry counts'
    ]
    assert len(result.policies.routes) == 1


def test_rule_without_backends_is_a_warning() -> None:
    result = load(rule_policy("matches: [{path: {value: /a}}]"))
    assert result.ok
    assert messages(result, Severity.WARNING) == [
        "spec.rules[0]: no backendRefs: every request this rule matches gets 500"
    ]


def test_prefix_rewrite_with_one_prefix_match_or_none_is_fine() -> None:
    rewrite = (
        "filters:\n  - type: URLRewrite\n"
        "    urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: ''}}\n"
        "backendRefs: [{name: web, port: 80}]"
    )
    result = load(
        rule_policy("matches: [{path: {value: /a}}]\n" + rewrite, name="one"),
        rule_policy(rewrite, name="none"),
    )
    assert result.problems == ()


# ---------------------------------------------------------------------------------------------
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
# Programmatic sets: the same verdicts without YAML


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
