"""The gateway config file: circuit breaker and namespace quotas, every problem positioned. Pure."""

from __future__ import annotations

import textwrap

import pytest

from policies.gatewayconfig import GatewayConfig, load_gateway_config
from policies.limits import Thresholds
from policies.model import RateLimit

HEAD = "apiVersion: fleetgate.io/v1alpha1\nkind: GatewayConfig\n"


def problems(text: str) -> list[str]:
    config, found = load_gateway_config("gw.yaml", textwrap.dedent(text))
    assert config is None
    return [str(p) for p in found]


def test_a_full_config() -> None:
    text = HEAD + textwrap.dedent("""\
        metadata: {name: edge}
        spec:
          circuitBreaker: {maxRequests: 64}
          namespaceQuotas:
            - {namespace: shop, requestsPerSecond: 100, burst: 200, maxConcurrent: 50}
            - {namespace: blog, requestsPerSecond: 2.5}
        """)
    config, found = load_gateway_config("gw.yaml", text)
    assert found == ()
    assert config == GatewayConfig(
        breaker=Thresholds(max_requests=64),
        namespace_quotas={
            "shop": RateLimit(100.0, 200, 50),
            "blog": RateLimit(2.5, 3, 0),  # burst: the rate rounded up
        },
    )


def test_an_empty_spec_is_the_defaults() -> None:
    config, found = load_gateway_config("gw.yaml", HEAD + "spec: {}\n")
    assert found == ()
    assert config == GatewayConfig()
    assert config.breaker.max_requests == 1024


def test_a_breaker_block_without_fields_keeps_the_default() -> None:
    config, _ = load_gateway_config("gw.yaml", HEAD + "spec: {circuitBreaker: {}}\n")
    assert config == GatewayConfig()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            HEAD + "spec:\n  circuitBreaker: {maxRequests: 0}\n",
            ["gw.yaml:4:33: spec.circuitBreaker.maxRequests: must be an integer >= 1, got 0"],
            id="breaker-zero",
        ),
        pytest.param(
            HEAD + "spec:\n  namespaceQuotas:\n    - {namespace: shop, requestsPerSecond: 1}\n"
            "    - {namespace: shop, requestsPerSecond: 2}\n",
            [
                "gw.yaml:6:8: spec.namespaceQuotas[1].namespace: namespace \"shop\" already has "
                "a quota (namespaceQuotas[0])"
            ],
            id="namespace-twice",
        ),
        pytest.param(
            HEAD + "spec:\n  namespaceQuotas: [{namespace: shop}]\n",
            ['gw.yaml:4:21: spec.namespaceQuotas[0]: missing required field "requestsPerSecond"'],
            id="no-rate",
        ),
        pytest.param(
            HEAD + "spec:\n  circuitBreaker: {maxConnections: 5}\n",
            ['gw.yaml:4:20: spec.circuitBreaker.maxConnections: unknown field "maxConnections"'],
            id="unknown-field",
        ),
        pytest.param(
            "apiVersion: fleetgate.io/v1alpha1\nkind: MemberCluster\nspec: {}\n",
            ["gw.yaml:2:7: kind: must be one of GatewayConfig"],
            id="another-kind",
        ),
        pytest.param("spec: [\n", ["gw.yaml:2:1: YAML syntax error"], id="syntax"),
        pytest.param("", ["gw.yaml:1:1: must hold exactly one GatewayConfig document, got 0"],
                     id="empty"),
        pytest.param(
            HEAD + "spec: {}\n---\n" + HEAD + "spec: {}\n",
            ["gw.yaml:1:1: must hold exactly one GatewayConfig document, got 2"],
            id="two",
        ),
        pytest.param("- a\n", ["gw.yaml:1:1: must be"], id="not-a-mapping"),
    ],
)  # fmt: skip
def test_problems_are_positioned(text: str, expected: list[str]) -> None:
    found = problems(text)
    assert len(found) == len(expected), found
    for line, start in zip(found, expected, strict=True):
        assert line.startswith(start), found


def test_an_alias_bomb_is_refused() -> None:
    quota = "{namespace: shop, requestsPerSecond: 1}"
    many = "[&q " + quota + ", *q" * 5000 + "]"
    text = HEAD + f"spec:\n  namespaceQuotas: {many}\n"
    assert problems(text) == ["gw.yaml:1:1: the document is too large (YAML aliases)"]
