"""policies.loading: the fields of HTTPRoute, MemberCluster (static and DNS endpoints) and
Release documents, and their errors."""

from __future__ import annotations

import textwrap

import pytest

from policies.model import HeaderRoute, RouteKind, Severity, ValueKind
from tests.policies.loading_builders import CLUSTER, lines, load, policy


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
