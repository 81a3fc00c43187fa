"""policies.loading: YAML → model, with the exact position of every problem: the example
fleet, positions, types, keys and kinds, YAML itself, and robustness. Filters and settings are
in test_loading_settings.py, the other kinds' fields in test_loading_kinds.py."""

from __future__ import annotations

import math
import textwrap

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import loading
from policies.model import PathKind, PathModifierKind, RouteKind
from tests.policies.loading_builders import CLUSTER, examples, lines, load, policy

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
