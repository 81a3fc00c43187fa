"""policies.validation: every rule of one document, with the field it names. Verdicts across
documents are in test_validation_documents.py, programmatic sets in
test_validation_programmatic.py."""

from __future__ import annotations

import pytest

from policies.model import Severity
from tests.policies.validation_builders import doc, load, messages, rule_policy

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
