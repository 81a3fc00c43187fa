"""policies.schema: the published JSON Schema and the loader agree on what a document may say."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from policies import loading, schema, shapes
from policies.gatewayconfig import load_gateway_config
from policies.kinds import KINDS

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "fleet"


def validator(kind: str | None = None) -> jsonschema.Draft202012Validator:
    document = schema.json_schema(kind)
    jsonschema.Draft202012Validator.check_schema(document)
    return jsonschema.Draft202012Validator(document)


def example_documents() -> list[Any]:
    return [
        doc
        for path in sorted(EXAMPLES.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
    ]


def test_schema_is_a_valid_draft_2020_12_schema_for_every_kind() -> None:
    for kind in (None, *KINDS):
        document = schema.json_schema(kind)
        assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        jsonschema.Draft202012Validator.check_schema(document)


def test_the_examples_validate() -> None:
    check = validator()
    documents = example_documents()
    assert len(documents) == 7
    for document in documents:
        check.validate(document)
        validator(document["kind"]).validate(document)


def test_per_kind_schema_refuses_other_kinds() -> None:
    cluster = next(d for d in example_documents() if d["kind"] == "MemberCluster")
    assert not validator("TrafficPolicy").is_valid(cluster)


def test_unknown_kind_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        schema.json_schema("Gateway")


TRAFFIC_POLICY = """\
apiVersion: fleetgate.io/v1alpha1
kind: TrafficPolicy
metadata: {name: web, namespace: shop}
spec:
"""

# Documents that break one rule a single field or mapping states: the schema and the loader must
# both refuse them. (Rules that compare values, such as regexes or filter combinations, are the
# loader's alone and are not listed here.)
BAD = [
    pytest.param("rules: [{backendRefs: [{name: web, port: 80, weight: ten}]}]", id="weight-type"),
    pytest.param(
        "rules: [{backendRefs: [{name: web, port: 80, weight: 1000001}]}]", id="weight-max"
    ),
    pytest.param("rules: [{backendRefs: [{name: web, port: 80, weigth: 1}]}]", id="unknown-field"),
    pytest.param("rules: [{backendRefs: [{name: web}]}]", id="missing-port"),
    pytest.param("rules: []", id="no-rules"),
    pytest.param("hostnames: [Shop.Example.com]\nrules: [{}]", id="hostname-pattern"),
    pytest.param("rules: [{matches: [{method: get}]}]", id="method-enum"),
    pytest.param("rules: [{filters: [{type: RequestRedirect}]}]", id="filter-without-payload"),
    pytest.param(
        "rules: [{filters: [{type: URLRewrite, urlRewrite: {}, requestRedirect: {}}]}]",
        id="filter-other-payload",
    ),
    pytest.param(
        "rules: [{filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath}}}]}]",
        id="path-modifier-without-value",
    ),
    pytest.param(
        "rules: [{backendRefs: [{name: web, port: 80, clusters: [{name: a}], "
        "clusterSelector: {matchLabels: {}}}]}]",
        id="clusters-and-selector",
    ),
    pytest.param(
        "rules:\n  - filters:\n      - type: RequestMirror\n        requestMirror:\n"
        "          backendRef: {name: web, port: 80}\n          percent: 5\n"
        "          fraction: {numerator: 1}",
        id="mirror-percent-and-fraction",
    ),
    pytest.param("timeouts: {request: 5 seconds}\nrules: [{}]", id="duration"),
    pytest.param("sessionAffinity: {type: Cookie}\nrules: [{}]", id="affinity-variant"),
    pytest.param("rateLimit: {requestsPerSecond: 0}\nrules: [{}]", id="exclusive-minimum"),
    pytest.param("retry: {retryOn: [sometimes]}\nrules: [{}]", id="retry-on-enum"),
]


@pytest.mark.parametrize("spec", BAD)
def test_schema_and_loader_both_refuse(spec: str) -> None:
    text = TRAFFIC_POLICY + textwrap.indent(spec + "\n", "  ")
    document = yaml.safe_load(text)
    assert not validator().is_valid(document)
    assert not loading.load_documents([("p.yaml", text)]).ok


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(
            "apiVersion: fleetgate.io/v1alpha1\nkind: MemberCluster\n"
            "metadata: {name: a, namespace: b}\nspec: {}",
            id="cluster-scoped-namespace",
        ),
        pytest.param(
            "apiVersion: fleetgate.io/v1alpha1\nkind: MemberCluster\nmetadata: {name: a}\n"
            "spec: {tls: {certFile: c}}",
            id="cert-without-key",
        ),
        pytest.param(
            "apiVersion: fleetgate.io/v1alpha1\nkind: MemberCluster\nmetadata: {name: a}\n"
            "spec: {services: [{name: web, ports: [{port: 80, endpoints: [localhost:80]}]}]}",
            id="endpoint-pattern",
        ),
        pytest.param(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: a}\n"
            "spec: {rules: [{backendRefs: [{name: web, port: 80, clusters: [{name: a}]}]}]}",
            id="http-route-extension",
        ),
        pytest.param(
            "apiVersion: fleetgate.io/v1alpha1\nkind: Release\nmetadata: {name: a}\n"
            "spec: {target: web, stable: {backendRef: {name: a, port: 1}}, "
            "canary: {backendRef: {name: b, port: 1}}, strategy: {canary: {steps: [{}]}}}",
            id="empty-step",
        ),
        pytest.param(
            "apiVersion: fleetgate.io/v1alpha1\nkind: Release\nmetadata: {name: a}\n"
            "spec: {target: web, stable: {backendRef: {name: a, port: 1}}, "
            "canary: {backendRef: {name: b, port: 1}}, strategy: {blueGreen: {"
            "previewHeader: {headerName: x, cookieName: y, headerValue: {exact: z}}}}}",
            id="header-and-cookie",
        ),
        pytest.param("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n", id="other-kind"),
        pytest.param(
            "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n"
            "metadata: {name: a}\nspec: {from: [], to: [{group: '', kind: Secret}]}",
            id="grant-to-secret",
        ),
    ],
)
def test_other_kinds_schema_and_loader_both_refuse(text: str) -> None:
    assert not validator().is_valid(yaml.safe_load(text))
    assert not loading.load_documents([("p.yaml", text)]).ok


def test_a_minimal_document_of_each_kind_validates() -> None:
    minimal = [
        "apiVersion: fleetgate.io/v1alpha1\nkind: MemberCluster\nmetadata: {name: a}\nspec: {}",
        TRAFFIC_POLICY + "  rules: [{}]",
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: HTTPRoute\nmetadata: {name: a}\n"
        "spec: {}",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: ReferenceGrant\nmetadata: {name: a}\n"
        "spec: {from: [{group: '', kind: HTTPRoute, namespace: b}], to: [{group: '', "
        "kind: Service}]}",
    ]
    check = validator()
    for text in minimal:
        check.validate(yaml.safe_load(text))


def test_schema_carries_descriptions_and_shared_definitions() -> None:
    document = schema.json_schema()
    defs = document["$defs"]
    assert defs["Duration"]["pattern"] == "^(?:([0-9]{1,5}(h|ms|m|s)){1,4})$"
    weight = defs["HTTPBackendRef"]["properties"]["weight"]
    assert weight == {
        "type": "integer",
        "minimum": 0,
        "maximum": 1000000,
        "description": "Relative share; defaults to 1, 0 = no traffic.",
    }
    assert {"HTTPRouteMatch", "HTTPRouteFilter", "PolicyBackendRef"} <= set(defs)


@pytest.mark.parametrize(
    ("shape", "phrase"),
    [
        pytest.param(shapes.Int(), "an integer", id="int"),
        pytest.param(shapes.Int(maximum=3), "an integer <= 3", id="int-max"),
        pytest.param(shapes.Int(1, 3), "an integer 1..3", id="int-range"),
        pytest.param(shapes.Int(choices=(1, 2)), "one of 1, 2", id="int-choices"),
        pytest.param(shapes.Num(0.5, 1.5), "a number 0.5..1.5", id="num-range"),
        pytest.param(shapes.Num(0, exclusive_minimum=True), "a number > 0", id="num-exclusive"),
        pytest.param(shapes.Str(enum=("a", "b")), "one of a, b", id="enum"),
        pytest.param(shapes.ListOf(shapes.Str()), "a list", id="list"),
        pytest.param(shapes.MapOf(shapes.Str()), "a mapping", id="map"),
        pytest.param(shapes.Anything(), "anything", id="anything"),
    ],
)
def test_shape_phrases(shape: shapes.Shape, phrase: str) -> None:
    assert shapes.describe(shape) == phrase


def test_shape_schema_of_plain_shapes() -> None:
    variant_obj = shapes.Obj(
        {
            "kind": shapes.Field(shapes.Str(enum=("A", "B"))),
            "a": shapes.Field(shapes.Num()),
            "b": shapes.Field(shapes.Bool()),
        },
        discriminator="kind",
        variants={"A": shapes.Variant(optional=("a",)), "B": shapes.Variant(optional=("a", "b"))},
    )
    document = schema.shape_schema(shapes.ListOf(variant_obj))
    check = jsonschema.Draft202012Validator(document)
    assert check.is_valid([{"kind": "A", "a": 1.5}, {"kind": "B", "b": True}, {}])
    assert not check.is_valid([{"kind": "A", "b": True}])
    assert document["items"]["properties"]["a"] == {"type": "number"}
    assert "$defs" not in document
    assert schema.shape_schema(shapes.Anything()) == {}
    assert schema.shape_schema(shapes.Duration())["$defs"]["Duration"]["type"] == "string"


GATEWAY_CONFIG = "apiVersion: fleetgate.io/v1alpha1\nkind: GatewayConfig\n"


@pytest.mark.parametrize(
    ("spec", "valid"),
    [
        pytest.param(
            "metadata: {name: edge}\nspec:\n  circuitBreaker: {maxRequests: 64}\n"
            "  namespaceQuotas:\n"
            "    - {namespace: shop, requestsPerSecond: 100, burst: 200, maxConcurrent: 50}\n",
            True,
            id="full",
        ),
        pytest.param("spec: {}\n", True, id="empty-spec"),
        pytest.param("spec: {circuitBreaker: {maxRequests: 0}}\n", False, id="breaker-below-1"),
        pytest.param("spec: {breaker: {}}\n", False, id="unknown-field"),
        pytest.param("spec: {namespaceQuotas: [{requestsPerSecond: 1}]}\n", False, id="no-ns"),
        pytest.param(
            "spec: {namespaceQuotas: [{namespace: Shop!, requestsPerSecond: 1}]}\n",
            False,
            id="bad-namespace",
        ),
        pytest.param("metadata: {name: a}\n", False, id="no-spec"),
    ],
)
def test_gateway_config_schema_and_loader_agree(spec: str, valid: bool) -> None:
    text = GATEWAY_CONFIG + spec
    config, problems = load_gateway_config("gw.yaml", text)
    assert (config is not None) is valid, problems
    assert validator("GatewayConfig").is_valid(yaml.safe_load(text)) is valid


def test_gateway_config_is_published_by_name_only() -> None:
    document = schema.json_schema("GatewayConfig")
    assert document["$id"].endswith("/GatewayConfig.json")
    assert document["$ref"] == "#/$defs/GatewayConfig"
    assert "GatewayConfig" in schema.SCHEMA_KINDS
    # Not a policy kind: a policy directory refuses it, and so does the all-kinds schema.
    text = GATEWAY_CONFIG + "spec: {}\n"
    assert not validator().is_valid(yaml.safe_load(text))
    assert not loading.load_documents([("p.yaml", text)]).ok
