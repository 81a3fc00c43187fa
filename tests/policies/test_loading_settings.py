"""policies.loading: defaults and conversions of route documents: namespaces, creation
order, filters with their Gateway API meaning, and the TrafficPolicy settings."""

from __future__ import annotations

import pytest

from policies.model import Algorithm, FilterKind, PathModifierKind, Severity, ValueKind
from tests.policies.loading_builders import CLUSTER, lines, load, policy

# ---------------------------------------------------------------------------------------------
# Defaults and conversions


def test_namespace_defaults_and_creation_order() -> None:
    first = policy("rules: [{backendRefs: [{name: web, port: 80}]}]", name="a", namespace="shop")
    second = first.replace("name: a, namespace: shop", "name: b")
    stamped = first.replace(
        "name: a, namespace: shop", "name: c, creationTimestamp: 2024-05-01T12:00:00Z"
    )
    quoted = first.replace(
        "name: a, namespace: shop", 'name: d, creationTimestamp: "2024-05-01T12:00:01+00:00"'
    )
    result = load("---\n".join([CLUSTER, first, second, stamped, quoted]))
    routes = {r.name: r for r in result.policies.routes}
    assert routes["b"].namespace == "default"
    assert [routes[n].created for n in "ab"] == [1, 2]
    assert routes["c"].created == 1714564800
    assert routes["d"].created == 1714564801


@pytest.mark.parametrize(
    "stamp",
    [
        pytest.param("2024-05-01T12:00:00", id="no-zone"),
        pytest.param('"yesterday"', id="text"),
        pytest.param('"2024-05-01T12:00:00"', id="quoted-no-zone"),
        pytest.param("2024-02-31", id="impossible-date"),
    ],
)
def test_bad_creation_timestamp(stamp: str) -> None:
    text = policy("rules: [{}]").replace("namespace: shop", f"creationTimestamp: {stamp}")
    result = load(text)
    assert [p.path for p in result.problems] == ["metadata.creationTimestamp"]


def test_filters_are_built_with_gateway_api_meaning() -> None:
    result = load(
        CLUSTER,
        "---\n"
        + policy("""\
            rules:
              - matches:
                  - path: {type: PathPrefix, value: /a}
                    headers: [{name: X-Env, value: "^p.*", type: RegularExpression}]
                    queryParams: [{name: Q, value: "1"}]
                    method: POST
                filters:
                  - type: RequestHeaderModifier
                    requestHeaderModifier:
                      set: [{name: X-Set, value: "1"}]
                      add: [{name: X-Add, value: "2"}]
                      remove: [X-Gone]
                  - type: URLRewrite
                    urlRewrite:
                      hostname: internal.example.com
                      path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}
                  - type: RequestMirror
                    requestMirror:
                      backendRef: {name: web, port: 80}
                      fraction: {numerator: 1, denominator: 4}
                  - type: RequestMirror
                    requestMirror: {backendRef: {name: web, port: 80}, percent: 10}
                  - type: RequestMirror
                    requestMirror: {backendRef: {name: web, port: 80}}
                backendRefs:
                  - name: web
                    port: 80
                    filters:
                      - type: ResponseHeaderModifier
                        responseHeaderModifier: {remove: [Server]}
              - matches: [{path: {type: Exact, value: /r}}]
                filters:
                  - type: RequestRedirect
                    requestRedirect:
                      scheme: https
                      hostname: shop.example.com
                      port: 8443
                      path: {type: ReplaceFullPath, replaceFullPath: /x}
            """),
    )
    assert result.ok, lines(result)
    first, second = result.policies.routes[0].rules
    match = first.matches[0]
    assert match.headers[0].name == "x-env"
    assert match.headers[0].kind is ValueKind.REGEX
    assert match.query_params[0].name == "Q"
    assert match.method == "POST"
    kinds = [f.kind for f in first.filters]
    assert kinds[:2] == [FilterKind.REQUEST_HEADER_MODIFIER, FilterKind.URL_REWRITE]
    modifier = first.filters[0].request_header_modifier
    assert modifier is not None
    assert (modifier.set, modifier.add, modifier.remove) == (
        (("x-set", "1"),),
        (("x-add", "2"),),
        ("x-gone",),
    )
    assert [f.request_mirror.percent for f in first.filters[2:] if f.request_mirror] == [
        25.0,
        10.0,
        100.0,
    ]
    backend_filter = first.backend_refs[0].filters[0].response_header_modifier
    assert backend_filter is not None
    assert backend_filter.remove == ("server",)
    redirect = second.filters[0].request_redirect
    assert redirect is not None
    assert (redirect.scheme, redirect.hostname, redirect.port, redirect.status) == (
        "https",
        "shop.example.com",
        8443,
        302,
    )
    assert redirect.path is not None
    assert redirect.path.kind is PathModifierKind.FULL


def test_a_broken_document_still_reports_its_other_errors_but_no_echoes() -> None:
    text = policy("""\
        rules:
          - matches: [{path: {value: /a}}, {path: {value: /b//}}]
            filters:
              - type: RequestRedirect
                requestRedirect: {path: {type: ReplacePrefixMatch}}
                extra: 1
        """)
    result = load(CLUSTER, "---\n" + text)
    assert [f"{p.path}: {p.message}" for p in result.problems] == [
        'spec.rules[0].matches[1].path.value: must not contain "//", got "/b//"',
        "spec.rules[0].filters[0].requestRedirect.path: "
        'type ReplacePrefixMatch needs the field "replacePrefixMatch"',
        'spec.rules[0].filters[0].extra: unknown field "extra"',
    ]


def test_filter_without_type() -> None:
    text = policy("rules: [{filters: [{}, {type: Nope}], backendRefs: [{name: web, port: 80}]}]")
    result = load(CLUSTER, "---\n" + text)
    assert [p.path for p in result.problems] == [
        "spec.rules[0].filters[0]",
        "spec.rules[0].filters[1].type",
    ]
    assert result.problems[0].message == 'missing required field "type"'


def test_mirror_fraction_above_one() -> None:
    text = policy("""\
        rules:
          - filters:
              - type: RequestMirror
                requestMirror:
                  backendRef: {name: web, port: 80}
                  fraction: {numerator: 5, denominator: 4}
            backendRefs: [{name: web, port: 80}]
        """)
    result = load(CLUSTER, "---\n" + text)
    assert [p.message for p in result.problems] == ["must not exceed the denominator (4)"]
    assert result.problems[0].path == "spec.rules[0].filters[0].requestMirror.fraction.numerator"


def test_settings_layering_and_algorithm_choice() -> None:
    text = policy("""\
        loadBalancer: {type: RoundRobin}
        timeouts: {request: 20s, connect: 2s}
        retry: {attempts: 3, codes: [503], backoff: 100ms}
        outlierDetection: {consecutiveErrors: 3, baseEjectionTime: 10m}
        rateLimit: {requestsPerSecond: 2.5}
        rules:
          - backendRefs: [{name: web, port: 80}]
          - backendRefs: [{name: web, port: 80}]
            timeouts: {request: 5s, idle: 1m}
            retry:
              retryOn: [gateway-error, retriable-status-codes]
              maxBackoff: 2s
              allowNonIdempotent: true
            sessionAffinity: {type: Cookie, cookieName: sticky, ttl: 1h}
            loadBalancer: {type: RingHash}
          - backendRefs: [{name: web, port: 80}]
            sessionAffinity: {type: Header, headerName: X-User}
            loadBalancer: {type: RingHash}
        """)
    result = load(CLUSTER, "---\n" + text)
    assert result.ok, lines(result)
    one, two, three = (rule.settings for rule in result.policies.routes[0].rules)
    assert one.algorithm is Algorithm.ROUND_ROBIN
    assert (one.timeouts.request_s, one.timeouts.connect_s, one.timeouts.idle_s) == (20, 2, 300)
    assert one.retry is not None
    assert one.retry.on == ("connect-failure", "reset", "retriable-status-codes")
    assert (one.retry.backoff_base_s, one.retry.backoff_max_s) == (0.1, 1.0)
    assert one.outlier_detection is not None
    assert one.outlier_detection.max_ejection_s == 600.0
    assert one.rate_limit is not None
    assert (one.rate_limit.requests_per_s, one.rate_limit.burst) == (2.5, 3)
    assert (two.timeouts.request_s, two.timeouts.connect_s, two.timeouts.idle_s) == (5, 2, 60)
    assert two.retry is not None
    assert two.retry.attempts == 3
    assert two.retry.on == ("gateway-error", "retriable-status-codes")
    assert two.retry.allow_non_idempotent
    assert two.algorithm is Algorithm.RING_HASH
    assert two.affinity is not None
    assert (two.affinity.kind, two.affinity.name, two.affinity.ttl_s) == ("Cookie", "sticky", 3600)
    assert three.affinity is not None
    assert (three.affinity.kind, three.affinity.name) == ("Header", "x-user")


def test_affinity_alone_selects_ring_hash() -> None:
    text = policy("""\
        sessionAffinity: {type: Cookie, cookieName: s}
        rules: [{backendRefs: [{name: web, port: 80}]}]
        """)
    settings_ = load(CLUSTER, "---\n" + text).policies.routes[0].rules[0].settings
    assert settings_.algorithm is Algorithm.RING_HASH
    assert settings_.affinity is not None
    assert settings_.affinity.ttl_s == 0.0


SETTING_ERRORS = [
    pytest.param(
        "timeouts: {request: 2s}\nrules: [{backendRefs: [{name: web, port: 80}], "
        "timeouts: {backendRequest: 3s}}]",
        "spec.rules[0].timeouts.backendRequest: must not be longer than request (2s)",
        id="backend-request-longer-than-inherited-request",
    ),
    pytest.param(
        "retry: {codes: [500], retryOn: [reset]}\nrules: [{backendRefs: [{name: web, port: 80}]}]",
        'spec.retry.codes: are used only when retryOn has "retriable-status-codes"',
        id="codes-without-retry-on",
    ),
    pytest.param(
        "retry: {backoff: 2s, maxBackoff: 1s}\nrules: [{backendRefs: [{name: web, port: 80}]}]",
        "spec.retry.maxBackoff: must not be shorter than backoff (2s)",
        id="max-backoff",
    ),
    pytest.param(
        "outlierDetection: {baseEjectionTime: 2m, maxEjectionTime: 1m}\n"
        "rules: [{backendRefs: [{name: web, port: 80}]}]",
        "spec.outlierDetection.maxEjectionTime: must not be shorter than baseEjectionTime (120s)",
        id="max-ejection",
    ),
    pytest.param(
        "loadBalancer: {type: LeastRequest}\n"
        "rules: [{backendRefs: [{name: web, port: 80}],\n"
        "  sessionAffinity: {type: Header, headerName: x}}]",
        "spec.rules[0].sessionAffinity: needs loadBalancer type RingHash",
        id="affinity-needs-ring-hash",
    ),
    pytest.param(
        "sessionAffinity: {type: Header, cookieName: x}\nrules: [{}]",
        'spec.sessionAffinity.cookieName: "cookieName" is not allowed when type is Header',
        id="variant-field",
    ),
    pytest.param(
        "rateLimit: {requestsPerSecond: 0}\nrules: [{}]",
        "spec.rateLimit.requestsPerSecond: must be a number > 0, got 0",
        id="rate-zero",
    ),
]


@pytest.mark.parametrize(("spec", "expected"), SETTING_ERRORS)
def test_setting_errors(spec: str, expected: str) -> None:
    result = load(CLUSTER, "---\n" + policy(spec))
    assert any(expected in line for line in lines(result)), lines(result)
    assert result.policies.routes == ()


def test_setting_error_inherited_by_every_rule_is_reported_once() -> None:
    spec = "retry: {backoff: 2s, maxBackoff: 1s}\nrules: [{}, {}, {}]"
    result = load(CLUSTER, "---\n" + policy(spec))
    assert [p.path for p in result.problems if p.severity is Severity.ERROR] == [
        "spec.retry.maxBackoff"
    ]
