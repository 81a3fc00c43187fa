"""Matching and decisions with Gateway API semantics (gateway_api_rules.md §1, §3, §5)."""

from __future__ import annotations

import pytest

from policies import matching
from policies.matching import Forward, Redirect, Reject, RequestHead
from policies.model import (
    BackendRef,
    Filter,
    FilterKind,
    Match,
    PathModifier,
    PathModifierKind,
    RequestMirror,
    RequestRedirect,
    Retry,
    ServiceRef,
    TrafficSettings,
    URLRewrite,
)
from policies.table import Backend, HostRoutes, RoutingTable
from tests.policies.routing_builders import (
    API,
    HOST,
    WEB,
    cluster,
    compile_routes,
    exact,
    head,
    header,
    modifier,
    param,
    prefix,
    regex,
    request_headers,
    response_headers,
    route,
    rule,
)


def forwarded(table: RoutingTable, request: RequestHead, roll: float = 0.0) -> Forward:
    decision = matching.decide(table, request, roll=roll)
    assert isinstance(decision, Forward), decision
    return decision


def holds(match: Match, request: RequestHead) -> bool:
    table = compile_routes(route("r", [HOST], rule(match)))
    decision = matching.decide(table, request, roll=0.0)
    assert isinstance(decision, Forward) or decision == matching.NO_ROUTE
    return isinstance(decision, Forward)


@pytest.mark.parametrize(
    ("match", "path", "expected"),
    [
        pytest.param(exact("/abc"), "/abc", True, id="exact"),
        pytest.param(exact("/abc"), "/abc/", False, id="exact-no-trailing-slash"),
        pytest.param(exact("/abc"), "/Abc", False, id="exact-case-sensitive"),
        pytest.param(exact("/abc"), "/abcd", False, id="exact-no-longer"),
        pytest.param(exact("/"), "/", True, id="exact-root"),
        pytest.param(prefix("/abc"), "/abc", True, id="prefix-itself"),
        pytest.param(prefix("/abc"), "/abc/", True, id="prefix-trailing-slash"),
        pytest.param(prefix("/abc"), "/abc/def", True, id="prefix-subpath"),
        pytest.param(prefix("/abc"), "/abcd", False, id="prefix-segment-boundary"),
        pytest.param(prefix("/abc"), "/ab", False, id="prefix-shorter"),
        pytest.param(prefix("/abc"), "/ABC", False, id="prefix-case-sensitive"),
        pytest.param(prefix("/abc/"), "/abc", True, id="prefix-slash-ignored"),
        pytest.param(prefix("/abc/"), "/abc/def", True, id="prefix-slash-subpath"),
        pytest.param(prefix("/abc/"), "/abcd", False, id="prefix-slash-boundary"),
        pytest.param(prefix("/"), "/", True, id="root-prefix-root"),
        pytest.param(prefix("/"), "/any/thing", True, id="root-prefix-anything"),
        pytest.param(prefix("/"), "*", False, id="root-prefix-not-asterisk-form"),
        pytest.param(regex(r"/api/v[0-9]+"), "/api/v12", True, id="regex"),
        pytest.param(regex(r"/api/v[0-9]+"), "/api/v1/x", False, id="regex-whole-path"),
        pytest.param(regex(r"/api/v[0-9]+"), "/x/api/v1", False, id="regex-anchored"),
        pytest.param(regex(r".*"), "*", True, id="regex-any"),
        pytest.param(Match(), "/whatever", True, id="omitted-path-is-prefix-root"),
    ],
)
def test_path(match: Match, path: str, expected: bool) -> None:
    assert holds(match, head(path)) is expected


@pytest.mark.parametrize(
    ("match", "headers", "expected"),
    [
        pytest.param(
            prefix("/", headers=(header("x-env", "prod"),)), {"x-env": "prod"}, True, id="exact"
        ),
        pytest.param(
            prefix("/", headers=(header("X-Env", "prod"),)),
            {"x-env": "prod"},
            True,
            id="name-case-insensitive",
        ),
        pytest.param(
            prefix("/", headers=(header("x-env", "prod"),)),
            {"x-env": "Prod"},
            False,
            id="value-case-sensitive",
        ),
        pytest.param(prefix("/", headers=(header("x-env", "prod"),)), {}, False, id="absent"),
        pytest.param(
            prefix("/", headers=(header("x-env", "a"),)),
            {"x-env": "a,b"},
            False,
            id="repeated-is-comma-joined",
        ),
        pytest.param(
            prefix("/", headers=(header("x-env", "a,b"),)),
            {"x-env": "a,b"},
            True,
            id="repeated-joined-value",
        ),
        pytest.param(
            prefix("/", headers=(header("x-env", r"(.*,)?b(,.*)?", regex=True),)),
            {"x-env": "a,b"},
            True,
            id="repeated-regex",
        ),
        pytest.param(
            prefix("/", headers=(header("x-v", r"v[0-9]", regex=True),)),
            {"x-v": "v1"},
            True,
            id="regex",
        ),
        pytest.param(
            prefix("/", headers=(header("x-v", r"v[0-9]", regex=True),)),
            {"x-v": "v12"},
            False,
            id="regex-whole-value",
        ),
        pytest.param(
            prefix("/", headers=(header("a", "1"), header("b", "2"))),
            {"a": "1", "b": "2"},
            True,
            id="anded",
        ),
        pytest.param(
            prefix("/", headers=(header("a", "1"), header("b", "2"))),
            {"a": "1", "b": "3"},
            False,
            id="anded-one-fails",
        ),
        pytest.param(
            prefix("/", headers=(header("a", "1"), header("A", "2"))),
            {"a": "1"},
            True,
            id="repeated-name-first-entry-counts",
        ),
    ],
)
def test_headers(match: Match, headers: dict[str, str], expected: bool) -> None:
    assert holds(match, head("/", headers=headers)) is expected


@pytest.mark.parametrize(
    ("match", "query", "expected"),
    [
        pytest.param(prefix("/", query=(param("page", "2"),)), "page=2", True, id="exact"),
        pytest.param(
            prefix("/", query=(param("page", "2"),)), "Page=2", False, id="name-case-sensitive"
        ),
        pytest.param(prefix("/", query=(param("page", "2"),)), "page=3", False, id="value-differs"),
        pytest.param(prefix("/", query=(param("page", "2"),)), "", False, id="absent"),
        pytest.param(
            prefix("/", query=(param("a", "1"),)), "a=1&a=2", True, id="repeated-first-value"
        ),
        pytest.param(
            prefix("/", query=(param("a", "2"),)), "a=1&a=2", False, id="repeated-not-second"
        ),
        pytest.param(
            prefix("/", query=(param("q", "a b"),)), "q=a%20b", True, id="percent-decoded"
        ),
        pytest.param(prefix("/", query=(param("q", "a b"),)), "q=a+b", True, id="plus-is-space"),
        pytest.param(prefix("/", query=(param("q/x", "1"),)), "q%2Fx=1", True, id="name-decoded"),
        pytest.param(prefix("/", query=(param("flag", ""),)), "flag=", True, id="blank-value"),
        pytest.param(prefix("/", query=(param("flag", ""),)), "flag", True, id="bare-name"),
        pytest.param(
            prefix("/", query=(param("id", r"[0-9]+", regex=True),)), "id=42", True, id="regex"
        ),
        pytest.param(
            prefix("/", query=(param("id", r"[0-9]+", regex=True),)),
            "id=42x",
            False,
            id="regex-whole",
        ),
        pytest.param(
            prefix("/", query=(param("a", "1"), param("b", "2"))),
            "b=2&a=1",
            True,
            id="anded-any-order",
        ),
        pytest.param(
            prefix("/", query=(param("a", "1"), param("a", "2"))),
            "a=1",
            True,
            id="repeated-name-first-entry",
        ),
    ],
)
def test_query_params(match: Match, query: str, expected: bool) -> None:
    assert holds(match, head("/", query=query)) is expected


@pytest.mark.parametrize(
    ("match", "method", "expected"),
    [
        pytest.param(prefix("/", method="POST"), "POST", True, id="same"),
        pytest.param(prefix("/", method="POST"), "GET", False, id="different"),
        pytest.param(prefix("/"), "DELETE", True, id="no-condition"),
        pytest.param(
            prefix("/api", method="GET", headers=(header("a", "1"),), query=(param("q", "1"),)),
            "GET",
            True,
            id="all-conditions-hold",
        ),
    ],
)
def test_method(match: Match, method: str, expected: bool) -> None:
    request = head("/api/x", method=method, headers={"a": "1"}, query="q=1")
    assert holds(match, request) is expected


def test_matches_are_ored_and_no_matches_match_everything() -> None:
    table = compile_routes(
        route("r", [HOST], rule(exact("/a"), exact("/b"), name="either"), rule(name="rest"))
    )
    assert forwarded(table, head("/a")).rule == "shop/r#either"
    entry = table.lookup(HOST)
    assert entry is not None
    won = matching.first_match(entry, head("/b"))
    assert won is not None
    assert won.match_index == 1
    assert forwarded(table, head("/b")).rule == "shop/r#either"
    assert forwarded(table, head("/c")).rule == "shop/r#rest"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("shop.example.com", "shop/exact", id="exact-host"),
        pytest.param("a.example.com", "shop/wild", id="wildcard"),
        pytest.param("a.b.example.com", "shop/wild-b", id="longest-wildcard"),
        pytest.param("b.example.com", "shop/wild", id="wildcard-not-its-apex"),
        pytest.param("x.y.z.example.com", "shop/wild", id="wildcard-many-labels"),
        pytest.param("example.com", "shop/any", id="apex-not-covered"),
        pytest.param("other.test", "shop/any", id="no-hostname-route"),
    ],
)
def test_host_lookup(host: str, expected: str) -> None:
    table = compile_routes(
        route("exact", ["shop.example.com"]),
        route("wild", ["*.example.com"]),
        route("wild-b", ["*.b.example.com"]),
        route("any", []),
    )
    assert forwarded(table, head("/", host=host)).route == expected


def test_unknown_host_without_catch_all_is_404() -> None:
    table = compile_routes(route("exact", ["shop.example.com"]), route("wild", ["*.example.com"]))
    assert matching.decide(table, head("/", host="other.test"), roll=0.5) == Reject(404, "no_route")
    assert matching.decide(table, head("/", host=".example.com"), roll=0.5) == matching.NO_ROUTE


def test_no_rule_is_404() -> None:
    table = compile_routes(route("r", [HOST], rule(prefix("/api"))))
    assert matching.decide(table, head("/web"), roll=0.5) == Reject(404, "no_route")


def test_redirect() -> None:
    redirect = RequestRedirect(
        scheme="https", path=PathModifier(PathModifierKind.PREFIX, "/v2"), status=301
    )
    table = compile_routes(
        route(
            "r",
            [HOST],
            rule(
                prefix("/v1"),
                backends=(),
                filters=(
                    Filter(FilterKind.REQUEST_REDIRECT, request_redirect=redirect),
                    response_headers(set=(("x-moved", "yes"),)),
                ),
            ),
        )
    )
    decision = matching.decide(table, head("/v1/items", query="page=2", port=8080), roll=0.5)
    assert decision == Redirect(
        route="shop/r",
        rule="shop/r#0",
        status=301,
        location="https://shop.example.com/v2/items?page=2",
        response_headers=(modifier(set=(("x-moved", "yes"),)),),
    )


@pytest.mark.parametrize(
    ("match", "rewrite", "path", "expected_path", "expected_host"),
    [
        pytest.param(
            prefix("/old"),
            URLRewrite(path=PathModifier(PathModifierKind.PREFIX, "/new")),
            "/old/x",
            "/new/x",
            None,
            id="prefix",
        ),
        pytest.param(
            prefix("/old/"),
            URLRewrite(path=PathModifier(PathModifierKind.PREFIX, "/")),
            "/old",
            "/",
            None,
            id="prefix-to-root",
        ),
        pytest.param(
            exact("/old"),
            URLRewrite(path=PathModifier(PathModifierKind.PREFIX, "/new")),
            "/old",
            "/new",
            None,
            id="prefix-on-exact-match",
        ),
        pytest.param(
            regex("/o.d/.*"),
            URLRewrite(path=PathModifier(PathModifierKind.PREFIX, "/new")),
            "/old/x",
            "/new",
            None,
            id="prefix-on-regex-replaces-all",
        ),
        pytest.param(
            prefix("/old"),
            URLRewrite(hostname="internal.shop", path=PathModifier(PathModifierKind.FULL, "/f")),
            "/old/x",
            "/f",
            "internal.shop",
            id="full-and-hostname",
        ),
        pytest.param(
            prefix("/old"),
            URLRewrite(hostname="internal.shop"),
            "/old/x",
            "/old/x",
            "internal.shop",
            id="hostname",
        ),
    ],
)
def test_url_rewrite(
    match: Match, rewrite: URLRewrite, path: str, expected_path: str, expected_host: str | None
) -> None:
    table = compile_routes(
        route(
            "r", [HOST], rule(match, filters=(Filter(FilterKind.URL_REWRITE, url_rewrite=rewrite),))
        )
    )
    decision = forwarded(table, head(path, query="a=1"))
    assert (decision.path, decision.host) == (expected_path, expected_host)


def test_backend_filters_apply_after_the_rules_and_only_to_their_backend() -> None:
    backend_rewrite = Filter(
        FilterKind.URL_REWRITE, url_rewrite=URLRewrite(hostname="api.internal")
    )
    rule_rewrite = Filter(FilterKind.URL_REWRITE, url_rewrite=URLRewrite(hostname="web.internal"))
    mirror = Filter(FilterKind.REQUEST_MIRROR, request_mirror=RequestMirror(WEB, percent=25.0))
    api = BackendRef(
        API,
        weight=1,
        filters=(
            request_headers(add=(("x-b", "api"),)),
            response_headers(remove=("server",)),
            backend_rewrite,
            mirror,
        ),
    )
    web = BackendRef(WEB, weight=1)
    table = compile_routes(
        route(
            "r",
            [HOST],
            rule(
                prefix("/"),
                backends=(web, api),
                filters=(request_headers(set=(("x-r", "1"),)), rule_rewrite, mirror),
            ),
        ),
        clusters=(cluster("east", services=(WEB, API)),),
    )
    to_web = forwarded(table, head("/"), roll=0.25)
    to_api = forwarded(table, head("/"), roll=0.75)
    assert to_web.backend.id == "shop/web:80"
    assert to_web.host == "web.internal"
    assert to_web.request_headers == (modifier(set=(("x-r", "1"),)),)
    assert to_web.response_headers == ()
    assert [m.percent for m in to_web.mirrors] == [25.0]
    assert to_api.backend.id == "shop/api:8080"
    assert to_api.host == "api.internal"
    assert to_api.request_headers == (
        modifier(set=(("x-r", "1"),)),
        modifier(add=(("x-b", "api"),)),
    )
    assert to_api.response_headers == (modifier(remove=("server",)),)
    assert [m.backend.id for m in to_api.mirrors] == ["shop/web:80", "shop/web:80"]


def test_the_first_redirect_and_the_first_rewrite_count() -> None:
    rewrites = (
        Filter(FilterKind.URL_REWRITE, url_rewrite=URLRewrite(hostname="first")),
        Filter(FilterKind.URL_REWRITE, url_rewrite=URLRewrite(hostname="second")),
    )
    redirects = (
        Filter(FilterKind.REQUEST_REDIRECT, request_redirect=RequestRedirect(hostname="first")),
        Filter(FilterKind.REQUEST_REDIRECT, request_redirect=RequestRedirect(hostname="second")),
    )
    table = compile_routes(
        route(
            "r", [HOST], rule(exact("/a"), filters=rewrites), rule(exact("/b"), filters=redirects)
        )
    )
    assert forwarded(table, head("/a")).host == "first"
    redirect = matching.decide(table, head("/b"), roll=0.0)
    assert isinstance(redirect, Redirect)
    assert redirect.location == "http://first/b"


def test_settings_travel_with_the_forward() -> None:
    settings = TrafficSettings(retry=Retry(attempts=3))
    table = compile_routes(route("r", [HOST], rule(prefix("/"), settings=settings)))
    assert forwarded(table, head("/")).settings == settings


@pytest.mark.parametrize(
    ("backends", "roll", "expected"),
    [
        pytest.param(
            (), 0.5, Reject(500, "no_backend", "shop/r", "shop/r#0"), id="no-backend-refs"
        ),
        pytest.param(
            (BackendRef(WEB, weight=0),),
            0.5,
            Reject(500, "no_backend", "shop/r", "shop/r#0"),
            id="all-weight-zero",
        ),
        pytest.param(
            (BackendRef(ServiceRef("shop", "gone", 80)),),
            0.5,
            Reject(500, "invalid_backend", "shop/r", "shop/r#0"),
            id="unresolved",
        ),
        pytest.param(
            (BackendRef(WEB), BackendRef(ServiceRef("shop", "gone", 80))),
            0.75,
            Reject(500, "invalid_backend", "shop/r", "shop/r#0"),
            id="unresolved-share",
        ),
        pytest.param(
            (BackendRef(WEB), BackendRef(ServiceRef("shop", "gone", 80))),
            0.25,
            "shop/web:80",
            id="resolved-share",
        ),
        pytest.param(
            (BackendRef(WEB, weight=1), BackendRef(API, weight=3)),
            0.2499,
            "shop/web:80",
            id="weights-low",
        ),
        pytest.param(
            (BackendRef(WEB, weight=1), BackendRef(API, weight=3)),
            0.25,
            "shop/api:8080",
            id="weights-high",
        ),
        pytest.param(
            (BackendRef(WEB, weight=0), BackendRef(API, weight=5)),
            0.0,
            "shop/api:8080",
            id="weight-zero-never",
        ),
    ],
)
def test_backend_choice(
    backends: tuple[BackendRef, ...], roll: float, expected: Reject | str
) -> None:
    table = compile_routes(
        route("r", [HOST], rule(prefix("/"), backends=backends)),
        clusters=(cluster("east", services=(WEB, API)),),
    )
    decision = matching.decide(table, head("/"), roll=roll)
    if isinstance(expected, Reject):
        assert decision == expected
    else:
        assert isinstance(decision, Forward)
        assert decision.backend.id == expected


def test_pick_backend_edges() -> None:
    zero = Backend("z", WEB, 0, ())
    one = Backend("a", WEB, 1, ())
    two = Backend("b", API, 2, ())
    assert matching.pick_backend((zero, one, two), 3, 0.0) is one
    # A roll whose product rounds up to the total still lands on the last positive weight.
    assert matching.pick_backend((one, two, zero), 3, 1.0) is two
    assert matching.pick_backend((zero,), 0, 0.5) is None
    assert matching.pick_backend((), 0, 0.5) is None


def test_candidates_lists_every_match_in_precedence_order() -> None:
    table = compile_routes(
        route(
            "r",
            [HOST],
            rule(prefix("/api")),
            rule(exact("/api/x")),
            rule(prefix("/"), name="root"),
            rule(regex("/api/.*"), name="regex"),
            rule(regex("/web/.*"), name="other"),
        )
    )
    entry = table.lookup(HOST)
    assert isinstance(entry, HostRoutes)
    found = matching.candidates(entry, head("/api/x"))
    assert [c.rule_id for c in found] == ["shop/r#1", "shop/r#0", "shop/r#root", "shop/r#regex"]
    assert matching.first_match(entry, head("/api/x")) is found[0]


def test_catch_all_host_entry_serves_unknown_hosts_on_an_exact_table() -> None:
    table = compile_routes(
        route("named", [HOST], rule(prefix("/a"))), route("any", [], rule(prefix("/")))
    )
    assert forwarded(table, head("/b")).route == "shop/any"
    assert forwarded(table, head("/a")).route == "shop/named"
    assert forwarded(table, head("/", host="else.test")).route == "shop/any"
