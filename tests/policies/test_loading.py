"""policies.loading: YAML → model, with the exact position of every problem."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import loading
from policies.model import (
    Algorithm,
    FilterKind,
    HeaderRoute,
    PathKind,
    PathModifierKind,
    RouteKind,
    Severity,
    ValueKind,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "fleet"

CLUSTER = """\
apiVersion: fleetgate.io/v1alpha1
kind: MemberCluster
metadata: {name: east, labels: {region: us-east}}
spec:
  services:
    - namespace: shop
      name: web
      ports:
        - port: 80
          endpoints: ["127.0.1.1:8080"]
"""


def load(*texts: str, file: str = "p.yaml") -> loading.LoadResult:
    return loading.load_documents([(file, textwrap.dedent(t)) for t in texts])


def lines(result: loading.LoadResult) -> list[str]:
    return [str(p) for p in result.problems]


def policy(spec: str, *, name: str = "web", namespace: str = "shop") -> str:
    head = f"""\
apiVersion: fleetgate.io/v1alpha1
kind: TrafficPolicy
metadata: {{name: {name}, namespace: {namespace}}}
spec:
"""
    return head + textwrap.indent(textwrap.dedent(spec).rstrip("\n") + "\n", "  ")


def examples() -> list[tuple[str, str]]:
    return [(str(p), p.read_text()) for p in sorted(EXAMPLES.glob("*.yaml"))]


# ---------------------------------------------------------------------------------------------
# The example fleet


def test_example_fleet_loads_without_problems() -> None:
    result = loading.load_documents(examples())
    assert result.ok
    assert result.problems == ()
    assert result.documents == 7
    p = result.policies
    assert [c.name for c in p.clusters] == ["east", "west", "eu"]
    assert [c.priority for c in p.clusters] == [0, 0, 1]
    assert p.clusters[0].region == "us-east"
    assert p.clusters[0].services[0].ports[0].endpoints == ("127.0.1.1:8080", "127.0.1.2:8080")
    assert p.clusters[0].health_check is not None
    assert p.clusters[0].health_check.timeout_s == 0.5
    assert sorted(r.id for r in p.routes) == ["edge/public-api", "shop/storefront"]
    assert [g.name for g in p.grants] == ["edge-routes-to-api"]
    assert [r.name for r in p.releases] == ["web-v2-rollout"]


def test_example_storefront_rules_carry_their_effective_settings() -> None:
    p = loading.load_documents(examples()).policies
    storefront = next(r for r in p.routes if r.name == "storefront")
    assert storefront.kind is RouteKind.TRAFFIC_POLICY
    rules = {rule.name: rule for rule in storefront.rules}
    web = rules["web"]
    assert [(c.cluster, c.weight, c.priority) for c in web.backend_refs[0].clusters] == [
        ("east", 3, None),
        ("west", 1, None),
        ("eu", 1, 1),
    ]
    # policy-level timeouts, overridden field by field in the "static" rule
    assert web.settings.timeouts.request_s == 10.0
    assert rules["static"].settings.timeouts.request_s == 30.0
    assert rules["static"].settings.timeouts.backend_request_s == 3.0
    assert web.settings.retry is not None
    assert web.settings.retry.backoff_base_s == 0.025
    assert web.settings.retry.on == ("connect-failure", "reset", "gateway-error")
    assert web.settings.rate_limit is not None
    assert rules["static"].settings.rate_limit is None
    pin = rules["canary-pin"].matches[0]
    assert pin.path.kind is PathKind.PREFIX
    assert pin.headers[0].name == "x-canary"
    redirect = rules["old-paths"].filters[0].request_redirect
    assert redirect is not None
    assert redirect.status == 301
    assert redirect.path is not None
    assert redirect.path.kind is PathModifierKind.PREFIX


def test_example_release_steps() -> None:
    release = loading.load_documents(examples()).policies.releases[0]
    assert [s.set_weight for s in release.steps if s.set_weight is not None] == [10, 50, 100]
    assert [s.pause_s for s in release.steps if s.pause_s is not None] == [60.0, 120.0, math.inf]
    assert sum(s.analysis for s in release.steps) == 2
    assert release.sticky
    assert release.analysis is not None
    assert release.analysis.max_latency_p99_s == 0.5
    assert release.abort_ramp_steps == (50, 10, 0)
    assert release.abort_ramp_interval_s == 20.0


# ---------------------------------------------------------------------------------------------
# Exact positions


POSITIONS = [
    pytest.param(
        policy("""\
            rules:
              - backendRefs:
                  - name: web
                    port: 80
                    weight: ten
            """),
        "p.yaml:9:19: spec.rules[0].backendRefs[0].weight: "
        'must be an integer 0..1000000, got "ten"',
        id="nested-wrong-type",
    ),
    pytest.param(
        policy("""\
            rules:
              - matches:
                  - path: {type: Exact, value: /a}
                  - headers:
                      - {name: x-a, value: "1", tpye: Exact}
            """),
        'p.yaml:9:39: spec.rules[0].matches[1].headers[0].tpye: unknown field "tpye"; '
        'did you mean "type"?',
        id="nested-unknown-field",
    ),
    pytest.param(
        CLUSTER + "---\n" + CLUSTER.replace("east", "west") + "---\n"
        "apiVersion: fleetgate.io/v1alpha1\nkind: MemberCluster\nmetadata: {name: eu}\n"
        "spec:\n  services:\n    - name: web\n      ports:\n        - port: 80\n"
        "          endpoints: [127.0.3.1:8080, 127.0.3.1]\n",
        'p.yaml:31:39: spec.services[0].ports[0].endpoints[1]: must be "ip:port", got "127.0.3.1"',
        id="third-document",
    ),
    pytest.param(
        CLUSTER
        + "---\n"
        + policy("""\
            rules:
              - matches: [{path: {type: RegularExpression, value: "/a(["}}]
                backendRefs: [{name: web, port: 80}]
            """),
        "p.yaml:17:50: spec.rules[0].matches[0].path.value: "
        "invalid regular expression '/a([': unterminated character set at position 3",
        id="semantic-error-in-second-document",
    ),
    pytest.param(
        policy("""\
            rules:
              - backendRefs: [{name: web, port: 80}]
                timeouts: {request: 1s, backendRequest: 2s}
            """),
        "p.yaml:7:31: spec.rules[0].timeouts.backendRequest: must not be longer than request (1s)",
        id="settings-at-the-field",
    ),
    pytest.param(
        "apiVersion: fleetgate.io/v1alpha1\nkind: MemberCluster\nmetadata: {name: a}\n"
        "spec: {weight: 1}\n---\nkind: MemberCluster\nmetadata:\n  name: [x]\n",
        'p.yaml:6:1: missing required field "apiVersion"',
        id="missing-field-at-document-start",
    ),
]


@pytest.mark.parametrize(("text", "expected"), POSITIONS)
def test_problem_position(text: str, expected: str) -> None:
    result = load(text)
    assert expected in lines(result)
    assert not result.ok


def test_missing_field_is_reported_on_its_mapping() -> None:
    result = load(policy("rules:\n  - backendRefs: [{name: web}]\n"))
    assert lines(result) == [
        'p.yaml:6:21: spec.rules[0].backendRefs[0]: missing required field "port"'
    ]


def test_bad_document_is_left_out_and_the_others_load() -> None:
    good = policy("rules:\n  - backendRefs: [{name: web, port: 80}]\n", name="good")
    bad = policy("rules:\n  - backendRefs: [{name: web, port: 80, weigth: 1}]\n", name="bad")
    result = load(CLUSTER + "---\n" + bad + "---\n" + good)
    assert [r.name for r in result.policies.routes] == ["good"]
    assert [c.name for c in result.policies.clusters] == ["east"]
    assert len(result.problems) == 1
    assert result.documents == 3


def test_problems_are_sorted_by_file_line_and_column() -> None:
    bad = policy("hostnames: [A]\nrules: [{backendRefs: [{name: Web, port: 0}]}]\n")
    result = loading.load_documents([("b.yaml", bad), ("a.yaml", bad)])
    keys = [(p.origin.file, p.origin.line, p.origin.column) for p in result.problems]
    assert keys == sorted(keys)
    assert keys[0][0] == "a.yaml"
    assert len(result.problems) == 6


# ---------------------------------------------------------------------------------------------
# Types, keys and kinds


TYPES = [
    pytest.param(
        "priority: high", 'spec.priority: must be an integer >= 0, got "high"', id="str-int"
    ),
    pytest.param(
        "priority: 1.5", "spec.priority: must be an integer >= 0, got 1.5", id="float-int"
    ),
    pytest.param(
        "priority: true", "spec.priority: must be an integer >= 0, got true", id="bool-int"
    ),
    pytest.param("priority:", "spec.priority: must be an integer >= 0, got null", id="null"),
    pytest.param("priority: [1]", "spec.priority: must be an integer >= 0, got a list", id="list"),
    pytest.param("services: {a: 1}", "spec.services: must be a list, got a mapping", id="map-list"),
    pytest.param("tls: yes", "spec.tls: must be a mapping, got yes (YAML reads it", id="yes"),
    pytest.param("tls: [a]", "spec.tls: must be a mapping, got a list", id="list-map"),
    pytest.param("[]", "spec: must be a mapping, got a list", id="spec-list"),
    pytest.param("kubeconfig: 12", "spec.kubeconfig: must be a string, got 12", id="int-str"),
    pytest.param(
        "kubeconfig: 2024-01-01", "got 2024-01-01 (a YAML timestamp; quote it)", id="date-str"
    ),
    pytest.param("tls: {insecureSkipVerify: 1}", "must be true or false, got 1", id="int-bool"),
    pytest.param(
        "healthCheck: {jitterPercent: .nan}", "must be a number 0..100, got .nan", id="nan"
    ),
    pytest.param(
        "healthCheck: {interval: 5 seconds}",
        'must be a duration like "500ms", "5s" or "1h30m", got "5 seconds"',
        id="duration",
    ),
    pytest.param("healthCheck: {interval: 5}", "got 5", id="duration-number"),
    pytest.param("kubeconfig: !!binary aGk=", "the YAML tag tag:yaml.org,2002:binary", id="tag"),
    pytest.param("kubeconfig: !custom x", "the YAML tag !custom is not supported", id="local-tag"),
    pytest.param("weight: 1\nweight: 2", 'spec.weight: duplicate key "weight"', id="dup-key"),
    pytest.param("[a]: 1", "spec: a key must be a plain string, got a collection", id="list-key"),
    pytest.param("Priority: 1", 'unknown field "Priority"; did you mean "priority"?', id="case"),
    pytest.param("zzz: 1", 'spec.zzz: unknown field "zzz"', id="unknown"),
    pytest.param(
        "services: [{name: web, ports: [{port: 80, endpoints: ['999.0.0.1:80']}]}]",
        'endpoints[0]: must be "ip:port" with a valid IP address, got "999.0.0.1:80"',
        id="endpoint-ip",
    ),
    pytest.param(
        "services: [{name: web, ports: [{port: 80, endpoints: ['[::1]:0']}]}]",
        'endpoints[0]: must have a port 1..65535, got "[::1]:0"',
        id="endpoint-port",
    ),
    pytest.param(
        "services: [{name: web, ports: [{port: 1}]}, {name: web, ports: [{port: 2}]}]",
        "spec.services[1]: service default/web is also services[0]",
        id="service-twice",
    ),
    pytest.param(
        "services: [{name: web, ports: [{port: 80}, {port: 80}]}]",
        "spec.services[0].ports[1].port: port 80 is listed twice",
        id="port-twice",
    ),
    pytest.param(
        "healthCheck: {hostname: 10.0.0.1}",
        'spec.healthCheck.hostname: must be a DNS name, not an IP address, got "10.0.0.1"',
        id="hostname-ip",
    ),
    pytest.param(
        'kubeconfig: "' + "x" * 100 + '"\nweight: "' + "y" * 100 + '"',
        'got "yyyyyyyyyy',
        id="long-value",
    ),
]


@pytest.mark.parametrize(("spec", "expected"), TYPES)
def test_wrong_types_and_keys(spec: str, expected: str) -> None:
    text = "apiVersion: fleetgate.io/v1alpha1\nkind: MemberCluster\nmetadata: {name: a}\nspec:\n"
    result = load(text + textwrap.indent(spec, "  ") + "\n")
    assert any(expected in line for line in lines(result)), lines(result)
    assert result.policies.clusters == ()


def test_long_values_are_cut_in_messages() -> None:
    result = load(policy(f'rules: [{{name: "{"x" * 300}"}}]'))
    assert all(len(str(p)) < 200 for p in result.problems)


KINDS = [
    pytest.param("kind: Foo\n", "kind: must be one of HTTPRoute, MemberCluster", id="unknown-kind"),
    pytest.param("kind: httproute\n", 'did you mean "HTTPRoute"?', id="kind-case"),
    pytest.param("apiVersion: v1\n", 'missing required field "kind"', id="no-kind"),
    pytest.param("- a\n", "a document must be a mapping with apiVersion, kind", id="list-doc"),
    pytest.param("just text\n", "got a scalar", id="scalar-doc"),
    pytest.param(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: TrafficPolicy\n",
        'apiVersion: must be one of fleetgate.io/v1alpha1, got "gateway.networking.k8s.io/v1"',
        id="wrong-api-version",
    ),
]


@pytest.mark.parametrize(("text", "expected"), KINDS)
def test_documents_that_are_not_a_kind(text: str, expected: str) -> None:
    result = load(text)
    assert any(expected in line for line in lines(result)), lines(result)
    assert not result.ok


def test_both_gateway_api_versions_are_accepted() -> None:
    route = "apiVersion: gateway.networking.k8s.io/{v}\nkind: HTTPRoute\nmetadata: {{name: r{v}}}\n"
    grant = (
        "apiVersion: gateway.networking.k8s.io/{v}\nkind: ReferenceGrant\n"
        "metadata: {{name: g{v}}}\n"
        "spec:\n  from: [{{group: '', kind: HTTPRoute, namespace: a}}]\n"
        "  to: [{{group: '', kind: Service}}]\n"
    )
    docs = [
        t.format(v=v) + ("spec: {}\n" if "HTTPRoute\n" in t else "")
        for t in (route, grant)
        for v in ("v1", "v1beta1")
    ]
    result = load("---\n".join(docs))
    assert result.ok, lines(result)
    assert len(result.policies.routes) == 2
    assert len(result.policies.grants) == 2
    assert result.policies.grants[0].to_services == (None,)
    assert result.policies.grants[0].from_kinds == (("", "HTTPRoute", "a"),)


def test_cluster_scoped_kind_rejects_a_namespace() -> None:
    result = load(CLUSTER.replace("name: east,", "name: east, namespace: shop,"))
    assert lines(result) == [
        'p.yaml:3:24: metadata.namespace: field "namespace" is not allowed here: '
        "this kind is cluster-scoped"
    ]


def test_empty_documents_and_comments_are_skipped() -> None:
    result = load("# nothing\n---\n---\n" + CLUSTER + "---\n")
    assert result.ok
    assert result.documents == 1


def test_merge_keys_and_anchors() -> None:
    text = """\
    apiVersion: fleetgate.io/v1alpha1
    kind: TrafficPolicy
    metadata: {name: web, namespace: shop}
    spec:
      rules:
        - backendRefs: [&ref {name: web, port: 80}]
        - backendRefs:
            - <<: *ref
              weight: 5
    """
    result = load(CLUSTER, "---\n" + textwrap.dedent(text))
    assert result.ok, lines(result)
    refs = [rule.backend_refs[0] for rule in result.policies.routes[0].rules]
    assert [(r.service.name, r.weight) for r in refs] == [("web", 1), ("web", 5)]


def test_alias_bomb_is_refused() -> None:
    """100 rules x 100 matches x 50 headers from a few lines of aliases: refused, not walked."""
    headers = "[" + ", ".join(["{name: a, value: b}"] * 50) + "]"
    matches = "[&match {headers: " + headers + "}" + ", *match" * 99 + "]"
    rules = "[&rule {matches: " + matches + "}" + ", *rule" * 99 + "]"
    bomb = policy(f"rules: {rules}")
    result = load(bomb)
    assert [p.message for p in result.problems] == [
        "the document is too large: YAML aliases repeat nodes more than 10000 times"
    ]
    assert result.policies.routes == ()


def test_non_printable_character_is_a_positioned_problem() -> None:
    result = load("apiVersion: fleetgate.io/v1alpha1\nkind: \x07\n")
    assert len(result.problems) == 1
    assert str(result.problems[0]).startswith(
        "p.yaml:2:7: YAML syntax error: character U+0007 is not allowed ("
    )


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        pytest.param("spec:\n  tls: {caFile: x\n", 3, 1, "while parsing a flow mapping", id="flow"),
        pytest.param("a: 1\n  b: 2\n", 2, 4, "mapping values are not allowed", id="indent"),
        pytest.param("a: *nowhere\n", 1, 4, "found undefined alias", id="alias"),
        pytest.param("- a\nb: 1\n", 2, 1, "while parsing a block collection", id="block"),
    ],
)
def test_yaml_syntax_errors_are_positioned(text: str, line: int, column: int, words: str) -> None:
    """libyaml and PyYAML word their messages differently; both start with these words."""
    result = load(text)
    assert len(result.problems) == 1
    problem = result.problems[0]
    assert (problem.origin.line, problem.origin.column, problem.path) == (line, column, "")
    assert problem.message.startswith(f"YAML syntax error: {words}")
    assert "\n" not in str(problem)


def test_syntax_error_keeps_the_documents_before_it() -> None:
    result = load(CLUSTER + "---\nkind: [\n")
    assert [c.name for c in result.policies.clusters] == ["east"]
    assert len(result.problems) == 1
    assert result.problems[0].origin.line == 13


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


def test_http_route_as_users_write_it() -> None:
    text = """\
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {name: api, namespace: shop}
    spec:
      parentRefs: [{name: gw, namespace: infra, sectionName: https}]
      hostnames: ["*.example.com"]
      rules:
        - backendRefs: [{name: web, port: 80, weight: 0}]
          timeouts: {request: 3s}
          retry: {attempts: 2, codes: [502, 503], backoff: 50ms}
    """
    result = load(CLUSTER, "---\n" + textwrap.dedent(text))
    assert result.ok, lines(result)
    route = result.policies.routes[0]
    assert route.kind is RouteKind.HTTP_ROUTE
    assert route.hostnames == ("*.example.com",)
    settings_ = route.rules[0].settings
    assert settings_.timeouts.request_s == 3.0
    assert settings_.retry is not None
    assert settings_.retry.codes == (502, 503)
    assert "retriable-status-codes" in settings_.retry.on
    assert route.rules[0].backend_refs[0].weight == 0


def test_http_route_without_rules_gets_the_gateway_api_default_rule() -> None:
    text = (
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: a}\nspec: {}\n"
    )
    result = load(text)
    route = result.policies.routes[0]
    assert len(route.rules) == 1
    assert route.rules[0].matches == ()
    assert route.rules[0].backend_refs == ()
    assert [p.severity for p in result.problems] == [Severity.WARNING]


@pytest.mark.parametrize(
    ("field", "note"),
    [
        pytest.param("clusters: [{name: east}]", "clusters", id="clusters"),
        pytest.param("clusterSelector: {matchLabels: {a: b}}", "clusterSelector", id="selector"),
    ],
)
def test_http_route_refuses_fleetgate_extensions(field: str, note: str) -> None:
    text = (
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: a}\n"
        f"spec:\n  rules:\n    - backendRefs: [{{name: web, port: 80, {field}}}]\n"
    )
    result = load(text)
    assert [p.message for p in result.problems] == [
        f'field "{note}" is not allowed here: a fleetgate extension: use a TrafficPolicy for it'
    ]


def test_member_cluster_fields() -> None:
    text = """\
    apiVersion: fleetgate.io/v1alpha1
    kind: MemberCluster
    metadata:
      name: far
      labels: {topology.kubernetes.io/region: r1, topology.kubernetes.io/zone: z1}
    spec:
      priority: 2
      weight: 7
      kubeconfig: /etc/far.kubeconfig
      tls: {caFile: ca.pem, certFile: c.pem, keyFile: k.pem, serverName: far.internal}
      healthCheck: {path: /ready, expectedStatuses: [200, 204], hostname: far.internal,
                    unhealthyInterval: 500ms}
      services:
        - name: web
          ports: [{port: 80, endpoints: ["[::1]:8080"]}]
    """
    result = load(text)
    assert result.ok, lines(result)
    cluster = result.policies.clusters[0]
    assert (cluster.region, cluster.zone, cluster.priority, cluster.weight) == ("r1", "z1", 2, 7)
    assert cluster.kubeconfig == "/etc/far.kubeconfig"
    assert cluster.tls is not None
    assert not cluster.tls.insecure_skip_verify
    assert cluster.tls.server_name == "far.internal"
    assert cluster.health_check is not None
    assert cluster.health_check.expected_statuses == (200, 204)
    assert cluster.health_check.interval_s == 5.0
    assert cluster.health_check.unhealthy_interval_s == 0.5
    assert cluster.services[0].namespace == "default"


def test_release_fields() -> None:
    text = """\
    apiVersion: fleetgate.io/v1alpha1
    kind: Release
    metadata: {name: r, namespace: shop}
    spec:
      target: web
      stable: {backendRef: {name: web, port: 80, clusters: [{name: east}]}}
      canary: {backendRef: {name: web, port: 80, clusterSelector: {matchLabels: {region: us-east}}}}
      strategy:
        canary:
          steps:
            - setHeaderRoute: {match: [{headerName: X-Canary, headerValue: {exact: always}}]}
            - setHeaderRoute: {match: [{cookieName: beta, cookieValue: {regex: "^y"}}]}
            - setMirror: {percent: 12.5}
      analysis:
        prometheus: {address: "http://127.0.0.1:9090", query: "sum(rate(x[1m]))"}
        maxSuccessRateDrop: 0.02
    """
    policies_ = "---\n" + policy("rules: [{backendRefs: [{name: web, port: 80}]}]")
    result = load(CLUSTER, policies_, "---\n" + textwrap.dedent(text))
    assert result.ok, lines(result)
    release = result.policies.releases[0]
    assert release.strategy == "Canary"
    assert release.steps[0].set_header_route == HeaderRoute(header="x-canary", value="always")
    assert release.steps[1].set_header_route == HeaderRoute(
        cookie="beta", value="^y", kind=ValueKind.REGEX
    )
    assert release.steps[2].set_mirror_percent == 12.5
    assert release.stable.clusters[0].cluster == "east"
    assert release.canary.cluster_selector == {"region": "us-east"}
    assert release.analysis is not None
    assert release.analysis.prometheus_address == "http://127.0.0.1:9090"
    assert release.analysis.min_success_rate == 0.99
    assert release.analysis.max_success_rate_drop == 0.02


def test_blue_green_release() -> None:
    text = """\
    apiVersion: fleetgate.io/v1alpha1
    kind: Release
    metadata: {name: r, namespace: shop}
    spec:
      target: web
      stable: {backendRef: {name: web, port: 80}}
      canary: {backendRef: {name: web, port: 80, clusters: [{name: east}]}}
      strategy:
        blueGreen:
          previewHeader: {headerName: x-preview, headerValue: {exact: "1"}}
          previewHostname: preview.shop.example.com
    ---
    apiVersion: fleetgate.io/v1alpha1
    kind: Release
    metadata: {name: hostname-only, namespace: shop}
    spec:
      target: web2
      stable: {backendRef: {name: web, port: 80}}
      canary: {backendRef: {name: web, port: 80, clusters: [{name: east}]}}
      strategy:
        blueGreen: {previewHostname: preview.shop.example.com}
    """
    policies_ = "---\n" + policy("rules: [{backendRefs: [{name: web, port: 80}]}]")
    policies_ += "---\n" + policy("rules: [{backendRefs: [{name: web, port: 80}]}]", name="web2")
    result = load(CLUSTER, policies_, "---\n" + textwrap.dedent(text))
    assert result.ok, lines(result)
    release = result.policies.releases[0]
    assert release.strategy == "BlueGreen"
    assert release.abort_ramp_interval_s == 10.0
    assert release.steps == ()
    assert release.preview_header == HeaderRoute(header="x-preview", value="1")
    assert release.preview_hostname == "preview.shop.example.com"
    assert [p.path for p in result.problems] == []


RELEASE_SHAPES = [
    pytest.param("strategy: {}", 'needs one of "canary" or "blueGreen"', id="no-strategy"),
    pytest.param(
        "strategy: {canary: {steps: [{setWeight: 1, pause: {}}]}}",
        'give only one of "setWeight" or "pause"',
        id="two-step-kinds",
    ),
    pytest.param(
        "strategy: {canary: {steps: [{setHeaderRoute: {match: [{headerName: x}]}}]}}",
        '"headerName" needs "headerValue" too',
        id="header-without-value",
    ),
    pytest.param(
        "strategy: {canary: {steps: []}}",
        "spec.strategy.canary.steps: must have at least 1 item(s), got 0",
        id="no-steps",
    ),
    pytest.param(
        "strategy: {canary: {steps: [{setWeight: 101}]}}",
        "must be an integer 0..100, got 101",
        id="weight-over-100",
    ),
]


@pytest.mark.parametrize(("strategy", "expected"), RELEASE_SHAPES)
def test_release_shape_errors(strategy: str, expected: str) -> None:
    text = (
        "apiVersion: fleetgate.io/v1alpha1\nkind: Release\nmetadata: {name: r}\nspec:\n"
        "  target: web\n  stable: {backendRef: {name: web, port: 80}}\n"
        f"  canary: {{backendRef: {{name: v2, port: 80}}}}\n  {strategy}\n"
    )
    result = load(text)
    assert any(expected in line for line in lines(result)), lines(result)
    assert result.policies.releases == ()


def test_release_with_missing_sides_reports_only_the_missing_fields() -> None:
    text = "apiVersion: fleetgate.io/v1alpha1\nkind: Release\nmetadata: {name: r}\n"
    text += "spec: {stable: {}}\n"
    result = load(text)
    assert sorted(p.message for p in result.problems) == [
        'missing required field "backendRef"',
        'missing required field "canary"',
        'missing required field "strategy"',
        'missing required field "target"',
    ]


# ---------------------------------------------------------------------------------------------
# Robustness: nothing a user writes raises


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_raises(text: str) -> None:
    result = loading.load_documents([("f.yaml", text)])
    assert all(isinstance(str(p), str) for p in result.problems)


YAMLISH = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**7) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_example_documents_with_random_values_never_raise(data: st.DataObject) -> None:
    """Replace one value somewhere in an example document with a random YAML value."""
    files = examples()
    name, text = files[data.draw(st.integers(0, len(files) - 1))]
    docs = list(yaml.safe_load_all(text))
    doc = docs[data.draw(st.integers(0, len(docs) - 1))]
    node = doc
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = data.draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, dict | list) and child and data.draw(st.booleans()):
            node = child
            continue
        node[key] = data.draw(YAMLISH)
        break
    result = loading.load_documents([(name, yaml.safe_dump_all(docs))])
    assert all(isinstance(str(p), str) for p in result.problems)


def test_labels_must_be_a_mapping() -> None:
    result = load(CLUSTER.replace("labels: {region: us-east}", "labels: [us-east]"))
    assert lines(result) == ["p.yaml:3:32: metadata.labels: must be a mapping, got a list"]


def test_label_keys_and_values_are_checked() -> None:
    result = load(CLUSTER.replace("labels: {region: us-east}", "labels: {region: no, -x: a}"))
    assert lines(result) == [
        "p.yaml:3:41: metadata.labels.region: must be a label value, got no (YAML reads it as "
        "false; quote it to mean the text)",
        'p.yaml:3:45: metadata.labels.-x: must be a label key, got "-x"',
    ]


def test_list_items_of_the_wrong_type_keep_later_indices() -> None:
    result = load(policy("rules: [web, {matches: [{path: {value: a}}]}]"))
    assert [f"{p.path}: {p.message}" for p in result.problems] == [
        'spec.rules[0]: must be a mapping, got "web"',
        'spec.rules[1].matches[0].path.value: must start with "/", got "a"',
    ]


def test_endpoints_from_dns() -> None:
    text = """\
    apiVersion: fleetgate.io/v1alpha1
    kind: MemberCluster
    metadata: {name: dns}
    spec:
      services:
        - name: web
          ports:
            - {port: 80, dns: {hostname: web.east.internal, port: 8080}}
            - {port: 443, dns: {srv: _https._tcp.web.east.internal}}
    """
    result = load(text)
    assert result.ok, lines(result)
    ports = result.policies.clusters[0].services[0].ports
    assert [str(p.dns) for p in ports] == [
        "web.east.internal:8080",
        "SRV _https._tcp.web.east.internal",
    ]
    assert ports[0].endpoints == ()


@pytest.mark.parametrize(
    ("dns", "expected"),
    [
        pytest.param(
            "{hostname: 10.0.0.1, port: 80}",
            'must be a DNS name, not an IP address (list it under "endpoints"), got "10.0.0.1"',
            id="ip",
        ),
        pytest.param(
            "{hostname: " + "a" * 64 + ".internal, port: 80}",
            "must have DNS labels of at most 63 characters, got one of 64",
            id="long-label",
        ),
        pytest.param("{srv: web.internal}", 'must be an SRV name like "_https._tcp', id="srv"),
        pytest.param("{hostname: web.internal}", '"hostname" needs "port" too', id="no-port"),
        pytest.param(
            "{srv: _a._tcp.x.internal, hostname: x.internal, port: 1}",
            'give only one of "srv" or "hostname" with "port"',
            id="both",
        ),
    ],
)
def test_bad_dns_endpoints(dns: str, expected: str) -> None:
    text = (
        "apiVersion: fleetgate.io/v1alpha1\nkind: MemberCluster\nmetadata: {name: dns}\n"
        f"spec:\n  services: [{{name: web, ports: [{{port: 80, dns: {dns}}}]}}]\n"
    )
    result = load(text)
    assert any(expected in line for line in lines(result)), lines(result)
    assert result.policies.clusters == ()
