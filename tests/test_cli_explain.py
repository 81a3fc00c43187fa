"""`fleetgate explain` on policy files written by the test: text and JSON output, exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fleetgate import cli

CLUSTERS = """\
apiVersion: fleetgate.io/v1alpha1
kind: MemberCluster
metadata: {name: east, labels: {region: us-east}}
spec:
  priority: 0
  services:
    - namespace: shop
      name: web
      ports: [{port: 80, endpoints: ["127.0.1.1:8080", "127.0.1.2:8080"]}]
    - namespace: shop
      name: api
      ports: [{port: 80, endpoints: ["127.0.1.3:8080"]}]
    - namespace: shop
      name: idle
      ports: [{port: 80, endpoints: []}]
---
apiVersion: fleetgate.io/v1alpha1
kind: MemberCluster
metadata: {name: west, labels: {region: us-west}}
spec:
  priority: 1
  services:
    - namespace: shop
      name: web
      ports: [{port: 80, endpoints: ["127.0.2.1:8080"]}]
"""

SHOP = """\
apiVersion: fleetgate.io/v1alpha1
kind: TrafficPolicy
metadata: {name: storefront, namespace: shop}
spec:
  hostnames: [shop.test]
  rules:
    - name: canary
      matches:
        - headers: [{name: x-canary, value: always}]
      backendRefs: [{name: api, port: 80}]
    - name: old
      matches: [{path: {type: PathPrefix, value: /old}}]
      filters:
        - type: RequestRedirect
          requestRedirect:
            path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}
            statusCode: 301
    - name: static
      matches: [{path: {type: PathPrefix, value: /static}}]
      filters:
        - type: URLRewrite
          urlRewrite:
            hostname: assets.internal
            path: {type: ReplacePrefixMatch, replacePrefixMatch: /assets}
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: x-env, value: prod}]
            remove: [x-debug]
        - type: ResponseHeaderModifier
          responseHeaderModifier:
            add: [{name: cache-control, value: max-age=60}]
        - type: RequestMirror
          requestMirror:
            backendRef: {name: api, port: 80}
            percent: 10
      backendRefs: [{name: web, port: 80}]
    - name: split
      matches: [{path: {type: PathPrefix, value: /split}}]
      backendRefs:
        - name: web
          port: 80
          weight: 3
          clusters: [{name: east, weight: 3}, {name: west, weight: 1, priority: 0}]
        - {name: gone, port: 80, weight: 1}
    - name: pinned
      matches: [{path: {type: PathPrefix, value: /pinned}}]
      backendRefs:
        - name: web
          port: 80
          filters:
            - type: RequestHeaderModifier
              requestHeaderModifier:
                add: [{name: x-pinned, value: "yes"}]
    - name: broken
      matches: [{path: {type: Exact, value: /broken}}]
      backendRefs: [{name: gone, port: 80}]
    - name: idle
      matches: [{path: {type: Exact, value: /idle}}]
      backendRefs: [{name: idle, port: 80}]
    - name: web
      backendRefs: [{name: web, port: 80}]
"""

EMPTY = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: nothing, namespace: shop}
spec:
  hostnames: [empty.test]
  rules:
    - matches: [{path: {type: PathPrefix, value: /}}]
"""


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    (tmp_path / "clusters.yaml").write_text(CLUSTERS)
    (tmp_path / "shop.yaml").write_text(SHOP)
    (tmp_path / "empty.yaml").write_text(EMPTY)
    return tmp_path


def explain_json(policies: Path, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    status = cli.main(["explain", "-c", str(policies), "--output", "json", *args])
    out = capsys.readouterr().out
    assert status == 0, out
    return json.loads(out)


def explain_text(policies: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert cli.main(["explain", "-c", str(policies), *args]) == 0
    return capsys.readouterr().out


def test_precedence_explained(policies: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = explain_json(policies, capsys, "-H", "X-Canary: always", "http://shop.test/")
    assert report["matched"] is True
    assert (report["policy"], report["kind"]) == ("shop/storefront", "TrafficPolicy")
    assert report["source"] == f"{policies / 'shop.yaml'}:1:1"
    assert report["rule_source"] == f"{policies / 'shop.yaml'}:7:7"
    assert report["rule"] == "shop/storefront#canary"
    assert report["why"] == (
        "beats shop/storefront#web (match 0): it has more header conditions (1 against 0)"
    )
    assert [(c["rule"], c["loses_because"]) for c in report["candidates"]] == [
        ("shop/storefront#canary", None),
        ("shop/storefront#web", "it has more header conditions (1 against 0)"),
    ]
    assert report["candidates"][0]["key"]["header_conditions"] == 1
    assert report["decision"] == "forward"
    assert report["status"] is None
    assert [(b["name"], b["cluster"], b["share"]) for b in report["backends"]] == [
        ("api", "east", 1.0)
    ]


def test_a_longer_prefix_wins_over_headers(
    policies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = explain_json(policies, capsys, "-H", "x-canary: always", "http://shop.test/split")
    assert report["rule"] == "shop/storefront#split"
    assert report["why"] == (
        "beats shop/storefront#canary (match 0): its path is longer (6 characters against 0)"
    )
    assert len(report["candidates"]) == 3


def test_weights_per_cluster_and_tier(policies: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = explain_json(policies, capsys, "http://shop.test/split/x")
    rows = [
        (b["namespace"], b["name"], b["port"], b["cluster"], b["tier"], b["weight"], b["share"])
        for b in report["backends"]
    ]
    assert rows == [
        ("shop", "web", 80, "east", 0, 3, pytest.approx(0.5625)),
        ("shop", "web", 80, "west", 0, 1, pytest.approx(0.1875)),
        ("shop", "gone", 80, None, None, 0, pytest.approx(0.25)),
    ]
    assert report["backends"][2]["status"] == 500
    assert report["backends"][2]["reason"] == "invalid_backend"
    assert report["decision"] == "forward"


def test_failover_tier_gets_nothing_while_the_first_is_healthy(
    policies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = explain_json(policies, capsys, "http://shop.test/anything")
    assert report["rule"] == "shop/storefront#web"
    assert [(b["cluster"], b["tier"], b["priority"], b["share"]) for b in report["backends"]] == [
        ("east", 0, 0, 1.0),
        ("west", 1, 1, 0.0),
    ]
    assert report["backends"][0]["endpoints"] == ["127.0.1.1:8080", "127.0.1.2:8080"]


def test_filters(policies: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = explain_json(
        policies, capsys, "-H", "X-Debug: 1", "-H", "Accept: */*", "http://shop.test/static/app.js"
    )
    assert report["path"] == "/assets/app.js"
    assert report["host"] == "assets.internal"
    assert report["request_headers"] == [["Accept", "*/*"], ["x-env", "prod"]]
    assert report["request_header_modifiers"] == [
        {"set": [["x-env", "prod"]], "add": [], "remove": ["x-debug"]}
    ]
    assert report["response_header_modifiers"] == [
        {"set": [], "add": [["cache-control", "max-age=60"]], "remove": []}
    ]
    assert report["mirrors"] == [{"backend": "shop/api:80", "percent": 10.0}]


def test_backend_level_filters(policies: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = explain_json(policies, capsys, "http://shop.test/pinned/a")
    assert report["path"] == "/pinned/a"
    assert report["request_headers"] == []
    assert {(b["cluster"], b["path"]) for b in report["backends"]} == {
        ("east", "/pinned/a"),
        ("west", "/pinned/a"),
    }
    assert report["backends"][0]["request_headers"] == [["x-pinned", "yes"]]


@pytest.mark.parametrize(
    ("url", "status", "reason", "location"),
    [
        pytest.param(
            "http://shop.test/old/a?b=1", 301, None, "http://shop.test/new/a?b=1", id="redirect"
        ),
        pytest.param("http://shop.test/broken", 500, "invalid_backend", None, id="invalid-backend"),
        pytest.param("http://empty.test/x", 500, "no_backend", None, id="no-backend"),
        pytest.param("http://other.test/", 404, "no_route", None, id="no-route"),
    ],
)
def test_local_replies(
    policies: Path,
    capsys: pytest.CaptureFixture[str],
    url: str,
    status: int,
    reason: str | None,
    location: str | None,
) -> None:
    report = explain_json(policies, capsys, url)
    assert (report["status"], report["reason"], report["location"]) == (status, reason, location)
    assert report["decision"] in ("redirect", "reject")


def test_a_backend_without_endpoints_is_a_503(
    policies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = explain_json(policies, capsys, "http://shop.test/idle")
    assert [(b["cluster"], b["status"], b["reason"]) for b in report["backends"]] == [
        ("east", 503, "no_healthy_backend")
    ]


def test_host_header_and_method(policies: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = explain_json(
        policies, capsys, "-X", "post", "-H", "Host: SHOP.test:8080", "https://127.0.0.1:8443/x"
    )
    assert report["request"]["host"] == "shop.test"
    assert report["request"]["method"] == "POST"
    assert report["request"]["port"] == 8443
    assert report["rule"] == "shop/storefront#web"


def test_text_output(policies: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = explain_text(policies, capsys, "-H", "x-canary: always", "http://shop.test/split?q=1")
    lines = text.splitlines()
    assert lines[0] == "request    GET http://shop.test/split?q=1"
    assert lines[1] == f"matched    TrafficPolicy shop/storefront ({policies / 'shop.yaml'}:1:1)"
    assert lines[2].startswith("rule       shop/storefront#split, match 0 at ")
    assert lines[3] == (
        "why        beats shop/storefront#canary (match 0): its path is longer (6 characters"
        " against 0)"
    )
    assert lines[4] == (
        "           shop/storefront#web (match 0) also matches; the winner wins: its path is"
        " longer (6 characters against 0)"
    )
    assert lines[5] == "upstream   path /split, host unchanged"
    assert lines[6] == (
        "backend    shop/web:80@east=3,west=1/p0 weight 3 -> cluster east"
        " (tier 0, priority 0, weight 3): 56.2%"
    )
    assert lines[8] == "backend    shop/gone:80 weight 1: 25.0% get 500 invalid_backend"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(
            "http://shop.test/static/x",
            [
                "filter     request headers: set x-env: prod; remove x-debug",
                "filter     response headers: add cache-control: max-age=60",
                "filter     mirror 10% to shop/api:80",
                "upstream   path /assets/x, host assets.internal",
            ],
            id="filters",
        ),
        pytest.param(
            "http://shop.test/old/x",
            ["reply      301 redirect to http://shop.test/new/x"],
            id="redirect",
        ),
        pytest.param("http://other.test/", ["matched    nothing: 404 no_route"], id="no-route"),
        pytest.param("http://shop.test/broken", ["reply      500 invalid_backend"], id="reject"),
        pytest.param(
            "http://shop.test/idle",
            [
                "backend    shop/idle:80 weight 1 -> cluster east (tier 0, priority 0, weight 1):"
                " 0.0%, 503 no_healthy_backend"
            ],
            id="no-endpoints",
        ),
        pytest.param(
            "http://shop.test/pinned",
            [
                "backend    shop/web:80 weight 1 -> cluster east (tier 0, priority 0, weight 1):"
                " 100.0%, upstream path /pinned, host unchanged"
            ],
            id="backend-filters",
        ),
    ],
)
def test_text_lines(
    policies: Path, capsys: pytest.CaptureFixture[str], url: str, expected: list[str]
) -> None:
    lines = explain_text(policies, capsys, url).splitlines()
    for line in expected:
        assert line in lines


def test_documents_with_errors_are_reported_and_left_out(
    policies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (policies / "bad.yaml").write_text(
        EMPTY.replace("empty.test", "bad.test")
        .replace("nothing", "bad")
        .replace("matches", "matchez")
    )
    status = cli.main(["explain", "-c", str(policies), "http://shop.test/"])
    captured = capsys.readouterr()
    assert status == 1
    assert "bad.yaml" in captured.err
    assert "left out of this explanation" in captured.err
    assert "rule       shop/storefront#web" in captured.out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["ftp://shop.test/"], "the URL must be http(s)://host/path", id="scheme"),
        pytest.param(
            ["-H", "no-colon", "http://shop.test/"], "a header must be 'Name: value'", id="header"
        ),
    ],
)
def test_bad_requests(
    policies: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert cli.main(["explain", "-c", str(policies), *args]) == 2
    assert message in capsys.readouterr().err


def test_unreadable_policy_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["explain", "-c", str(tmp_path / "missing.yaml"), "shop.test/"]) == 1
    assert "missing.yaml" in capsys.readouterr().err
