"""Header edits, ReplacePrefixMatch and redirect Locations (gateway_api_rules.md §3 and §4)."""

from __future__ import annotations

import pytest

from policies import filters
from policies.model import HeaderModifier, PathModifier, PathModifierKind, RequestRedirect
from tests.policies.routing_builders import modifier

Headers = list[tuple[str, str]]


@pytest.mark.parametrize(
    ("headers", "modifiers", "expected"),
    [
        pytest.param(
            [("Accept", "*/*")],
            [modifier(set=(("x-env", "prod"),))],
            [("Accept", "*/*"), ("x-env", "prod")],
            id="set-absent-appends",
        ),
        pytest.param(
            [("X-Env", "dev"), ("Accept", "*/*"), ("x-env", "test")],
            [modifier(set=(("x-env", "prod"),))],
            [("x-env", "prod"), ("Accept", "*/*")],
            id="set-replaces-every-occurrence-at-the-first-place",
        ),
        pytest.param(
            [("My-Header", "foo")],
            [modifier(add=(("my-header", "bar,baz"),))],
            [("My-Header", "foo,bar,baz")],
            id="add-appends-in-comma-list-form",
        ),
        pytest.param(
            [("a", "1"), ("A", "2")],
            [modifier(add=(("a", "3"),))],
            [("a", "1"), ("A", "2,3")],
            id="add-joins-onto-the-last-occurrence",
        ),
        pytest.param(
            [("a", "")],
            [modifier(add=(("a", "3"),))],
            [("a", "3")],
            id="add-to-empty-value",
        ),
        pytest.param(
            [],
            [modifier(add=(("x-new", "1"),))],
            [("x-new", "1")],
            id="add-absent-creates",
        ),
        pytest.param(
            [("X-Debug", "1"), ("Accept", "*/*"), ("x-debug", "2")],
            [modifier(remove=("x-DEBUG",))],
            [("Accept", "*/*")],
            id="remove-every-occurrence-case-insensitively",
        ),
        pytest.param(
            [("a", "1")],
            [modifier(set=(("a", "2"),)), modifier(add=(("a", "3"),)), modifier(remove=("b",))],
            [("a", "2,3")],
            id="modifiers-apply-in-order",
        ),
        pytest.param(
            [("a", "1")],
            [modifier(set=(("b", "2"),), add=(("c", "3"),), remove=("b", "a"))],
            [("c", "3")],
            id="set-then-add-then-remove",
        ),
        pytest.param([("a", "1")], [], [("a", "1")], id="no-modifiers"),
    ],
)
def test_edit_headers(headers: Headers, modifiers: list[HeaderModifier], expected: Headers) -> None:
    before = list(headers)
    assert filters.edit_headers(headers, modifiers) == expected
    assert headers == before  # the input is never modified


# Every row of the spec's ReplacePrefixMatch table (gateway_api_rules.md §4), plus "/" prefixes.
@pytest.mark.parametrize(
    ("path", "prefix", "replacement", "expected"),
    [
        pytest.param("/foo/bar", "/foo", "/xyz", "/xyz/bar", id="plain"),
        pytest.param("/foo/bar", "/foo", "/xyz/", "/xyz/bar", id="replacement-trailing-slash"),
        pytest.param("/foo/bar", "/foo/", "/xyz", "/xyz/bar", id="prefix-trailing-slash"),
        pytest.param("/foo/bar", "/foo/", "/xyz/", "/xyz/bar", id="both-trailing-slashes"),
        pytest.param("/foo", "/foo", "/xyz", "/xyz", id="whole-path"),
        pytest.param("/foo/", "/foo", "/xyz", "/xyz/", id="request-trailing-slash-kept"),
        pytest.param("/foo/bar", "/foo", "", "/bar", id="empty-replacement"),
        pytest.param("/foo/", "/foo", "", "/", id="empty-replacement-trailing-slash"),
        pytest.param("/foo", "/foo", "", "/", id="empty-replacement-whole-path"),
        pytest.param("/foo/", "/foo", "/", "/", id="slash-replacement-trailing-slash"),
        pytest.param("/foo", "/foo", "/", "/", id="slash-replacement-whole-path"),
        pytest.param("/foo/bar", "/", "/xyz", "/xyz/foo/bar", id="root-prefix"),
        pytest.param("/", "/", "/xyz", "/xyz/", id="root-prefix-root-path"),
    ],
)
def test_replace_prefix(path: str, prefix: str, replacement: str, expected: str) -> None:
    assert filters.replace_prefix(path, prefix, replacement) == expected


@pytest.mark.parametrize(
    ("modifier_", "expected"),
    [
        pytest.param(None, "/foo/bar", id="none-keeps-the-path"),
        pytest.param(PathModifier(PathModifierKind.FULL, "/new"), "/new", id="full"),
        pytest.param(PathModifier(PathModifierKind.PREFIX, "/v2"), "/v2/bar", id="prefix"),
    ],
)
def test_rewrite_path(modifier_: PathModifier | None, expected: str) -> None:
    assert filters.rewrite_path("/foo/bar", modifier_, "/foo") == expected


@pytest.mark.parametrize(
    ("redirect", "scheme", "listener_port", "query", "expected"),
    [
        pytest.param(
            RequestRedirect(), "http", 80, "", "http://shop.test/foo/bar", id="defaults-port-80"
        ),
        pytest.param(
            RequestRedirect(),
            "http",
            8080,
            "",
            "http://shop.test:8080/foo/bar",
            id="no-scheme-uses-listener-port",
        ),
        pytest.param(
            RequestRedirect(scheme="https"),
            "http",
            8080,
            "",
            "https://shop.test/foo/bar",
            id="scheme-brings-its-well-known-port",
        ),
        pytest.param(
            RequestRedirect(scheme="http"),
            "https",
            443,
            "",
            "http://shop.test/foo/bar",
            id="https-to-http",
        ),
        pytest.param(
            RequestRedirect(scheme="https", port=8443),
            "http",
            80,
            "",
            "https://shop.test:8443/foo/bar",
            id="explicit-port",
        ),
        pytest.param(
            RequestRedirect(port=443, scheme="https"),
            "http",
            80,
            "",
            "https://shop.test/foo/bar",
            id="explicit-default-port-omitted",
        ),
        pytest.param(
            RequestRedirect(port=80),
            "https",
            443,
            "",
            "https://shop.test:80/foo/bar",
            id="port-80-kept-for-https",
        ),
        pytest.param(
            RequestRedirect(hostname="www.shop.test"),
            "http",
            80,
            "",
            "http://www.shop.test/foo/bar",
            id="hostname",
        ),
        pytest.param(
            RequestRedirect(path=PathModifier(PathModifierKind.FULL, "/login")),
            "http",
            80,
            "",
            "http://shop.test/login",
            id="replace-full-path",
        ),
        pytest.param(
            RequestRedirect(path=PathModifier(PathModifierKind.PREFIX, "/v2")),
            "http",
            80,
            "",
            "http://shop.test/v2/bar",
            id="replace-prefix-match",
        ),
        pytest.param(
            RequestRedirect(),
            "http",
            80,
            "a=1&b=2",
            "http://shop.test/foo/bar?a=1&b=2",
            id="query-kept",
        ),
    ],
)
def test_redirect_location(
    redirect: RequestRedirect, scheme: str, listener_port: int, query: str, expected: str
) -> None:
    location = filters.redirect_location(
        redirect,
        scheme=scheme,
        host="shop.test",
        listener_port=listener_port,
        path="/foo/bar",
        query=query,
        matched_prefix="/foo",
    )
    assert location == expected
