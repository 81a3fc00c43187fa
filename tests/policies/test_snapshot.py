"""The snapshot wire format: exact round trip, checksum, and precise errors on bad input."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from typing import Any

import pytest

from policies import matching, snapshot
from policies.errors import PolicyError, SnapshotError
from policies.model import (
    Algorithm,
    BackendRef,
    ClusterWeight,
    Filter,
    FilterKind,
    HealthCheck,
    MemberCluster,
    OutlierDetection,
    PathModifier,
    PathModifierKind,
    PolicySet,
    RateLimit,
    RequestMirror,
    RequestRedirect,
    Retry,
    ServicePort,
    ServiceRef,
    SessionAffinity,
    StaticService,
    Timeouts,
    TrafficSettings,
    UpstreamTLS,
    URLRewrite,
)
from policies.table import Backend, Endpoint, HostRoutes, Inventory, RoutingTable, compile_table
from tests.policies.routing_builders import (
    API,
    EAST,
    HOST,
    WEB,
    compile_routes,
    exact,
    head,
    header,
    param,
    prefix,
    regex,
    request_headers,
    response_headers,
    route,
    rule,
)

SETTINGS = TrafficSettings(
    algorithm=Algorithm.RING_HASH,
    timeouts=Timeouts(request_s=3.5, backend_request_s=1.0),
    retry=Retry(attempts=2, on=("connect-failure", "retriable-status-codes"), codes=(502, 503)),
    affinity=SessionAffinity("Cookie", "sticky", ttl_s=60.0),
    outlier_detection=OutlierDetection(consecutive_errors=3),
    rate_limit=RateLimit(requests_per_s=100.0, burst=20),
)


def rich_table(version: int = 3) -> RoutingTable:
    """A table that uses every field the wire form carries."""
    west = MemberCluster(
        "west",
        {"topology.kubernetes.io/zone": "w1"},
        priority=1,
        weight=2,
        services=(
            StaticService("shop", "web", (ServicePort(80, ("127.0.2.1:8080", "127.0.2.2:8080")),)),
            StaticService("shop", "api", (ServicePort(8080, ("127.0.2.3:9090",)),)),
        ),
        tls=UpstreamTLS(ca_file="ca.pem", server_name="web.shop", insecure_skip_verify=True),
    )
    mirror = Filter(FilterKind.REQUEST_MIRROR, request_mirror=RequestMirror(API, percent=12.5))
    rewrite = Filter(
        FilterKind.URL_REWRITE,
        url_rewrite=URLRewrite("internal", PathModifier(PathModifierKind.PREFIX, "/v2")),
    )
    redirect = Filter(
        FilterKind.REQUEST_REDIRECT,
        request_redirect=RequestRedirect(
            "https", "www.shop.test", 8443, PathModifier(PathModifierKind.FULL, "/x"), 308
        ),
    )
    split = (
        BackendRef(WEB, weight=3, clusters=(ClusterWeight("east", 2), ClusterWeight("west", 1, 0))),
        BackendRef(
            API,
            weight=1,
            filters=(
                request_headers(add=(("x-b", "1"),)),
                response_headers(remove=("x-c",)),
                rewrite,
                mirror,
            ),
        ),
        BackendRef(ServiceRef("shop", "gone", 80)),
        BackendRef(WEB, cluster_selector={"region": "east"}),
    )
    same = dataclasses.replace(SETTINGS)
    routes = (
        route(
            "main",
            [HOST, "*.example.com"],
            rule(
                prefix(
                    "/api",
                    method="POST",
                    headers=(header("x-a", "1"), header("x-r", "v[0-9]", regex=True)),
                ),
                regex("/api/v[0-9]+", query=(param("q", "1"), param("r", ".*", regex=True))),
                backends=split,
                filters=(
                    request_headers(set=(("x-s", "1"),)),
                    response_headers(add=(("x-t", "2"),)),
                    rewrite,
                    mirror,
                ),
                settings=SETTINGS,
                name="split",
            ),
            rule(exact("/old"), backends=(), filters=(redirect,)),
            rule(exact("/none"), backends=()),
            created=42,
        ),
        # Equal settings in another object, shared by two rules: written once.
        route("deep", ["*.b.example.com"], rule(prefix("/"), settings=same)),
        route("any", [], rule(prefix("/"), settings=same)),
    )
    return compile_routes(*routes, clusters=(EAST, west), version=version)


def canonical_sha256(value: object) -> str:
    return hashlib.sha256(
        json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def resign(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with its checksum recomputed as the format defines it (written out here, from the
    module docstring, rather than with the module's own helpers)."""
    routes = {
        k: v for k, v in data.items() if k not in ("schema", "version", "checksum", "backends")
    }
    spreads = {bid: canonical_sha256(spread) for bid, spread in data["backends"].items()}
    checksum = canonical_sha256({"backends": spreads, "routes": canonical_sha256(routes)})
    return {**data, "checksum": checksum}


def test_round_trip_is_exact() -> None:
    t = rich_table()
    wire = json.loads(json.dumps(snapshot.dump(t)))
    loaded = snapshot.load(wire)
    assert loaded == t
    assert loaded.checksum == t.checksum == wire["checksum"]
    assert wire["schema"] == "fleetgate.io/snapshot/v2"
    assert wire["version"] == 3
    assert resign(wire)["checksum"] == wire["checksum"]
    # The rebuilt indices and regexes work: the same requests give the same decisions.
    for request in (
        head("/api/v3", query="q=1&r=z"),
        head("/api/x", method="POST", headers={"x-a": "1", "x-r": "v7"}),
        head("/old"),
        head("/none"),
        head("/", host="a.b.example.com"),
        head("/", host="else.test"),
    ):
        for roll in (0.0, 0.45, 0.65, 0.75, 0.99):
            assert matching.decide(loaded, request, roll=roll) == matching.decide(
                t, request, roll=roll
            )


def test_checksum_ignores_the_version() -> None:
    assert snapshot.checksum(rich_table(version=1)) == rich_table(version=9).checksum


def test_an_empty_table_round_trips() -> None:
    t = compile_routes()
    assert snapshot.load(snapshot.dump(t)) == t


def test_fields_that_differ_from_their_derived_value_are_written() -> None:
    t = compile_routes(route("r", [HOST], rule(prefix("/"), backends=(BackendRef(WEB, weight=2),))))
    entry = t.lookup(HOST)
    assert entry is not None
    odd = dataclasses.replace(entry.rules[0], total_weight=7, rule_id="custom")
    built = dataclasses.replace(t, hosts={HOST: HostRoutes((odd,))})
    built = dataclasses.replace(built, checksum=snapshot.checksum(built))
    wire = json.loads(json.dumps(snapshot.dump(built)))
    assert snapshot.load(wire) == built
    (rule_,) = wire["routes"][0]["rules"]
    assert (rule_["id"], rule_["total_weight"]) == ("custom", 7)


def test_dump_refuses_a_backend_the_table_does_not_hold() -> None:
    t = compile_routes(route("r", [HOST]))
    entry = t.lookup(HOST)
    assert entry is not None
    stray = Backend("shop/web:80", WEB, 1, ())  # same id, other targets
    bad = dataclasses.replace(
        t, hosts={HOST: HostRoutes((dataclasses.replace(entry.rules[0], backends=(stray,)),))}
    )
    with pytest.raises(ValueError, match=r"is not the spread table\.backends holds"):
        snapshot.dump(bad)


def edit(path: str, value: object) -> Any:
    """A function that sets `path` (dots and [i]) in a wire dict to `value` (or deletes it)."""

    def apply(data: dict[str, Any]) -> None:
        keys: list[str | int] = []
        for part in path.format(split=split_rule(data)).split("."):
            name, *indices = part.split("[")
            keys.append(name)
            keys.extend(int(i.rstrip("]")) for i in indices)
        target: Any = data
        for key in keys[:-1]:
            target = target[key]
        if value is DELETE:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value

    return apply


DELETE = object()


def split_rule(data: dict[str, Any]) -> str:
    """Where the wire form put the rule named "split" (rules go in order of first appearance)."""
    for i, route_ in enumerate(data["routes"]):
        for j, rule_ in enumerate(route_["rules"]):
            if rule_.get("id") == "shop/main#split":
                return f"routes[{i}].rules[{j}]"
    raise AssertionError("no split rule")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            edit("version", "7"), "version: must be an integer, got '7'", id="version-type"
        ),
        pytest.param(edit("version", True), "version: must be an integer", id="version-bool"),
        pytest.param(edit("extra", 1), "must have the keys", id="unknown-top-level-key"),
        pytest.param(edit("routes", DELETE), "must have the keys", id="missing-top-level-key"),
        pytest.param(
            edit("{split}.settings.timeouts.request_s", "fast"),
            "{split}.settings.timeouts.request_s: must be float, got str 'fast'",
            id="nested-scalar",
        ),
        pytest.param(
            edit("{split}.settings.algorithm", "Random"),
            "{split}.settings.algorithm: must be one of",
            id="enum",
        ),
        pytest.param(
            edit("{split}.settings.colour", "blue"),
            "{split}.settings: has unknown fields ['colour']",
            id="unknown-field",
        ),
        pytest.param(
            edit("{split}.settings.retry", [1]),
            "{split}.settings.retry: must be an object, got list",
            id="object-expected",
        ),
        pytest.param(
            edit("{split}.settings.retry.codes", 502),
            "{split}.settings.retry.codes: must be a list, got int",
            id="list-expected",
        ),
        pytest.param(
            edit("{split}.request_headers[0].set[0]", ["x-s"]),
            "{split}.request_headers[0].set[0]: must have 2 items, got 1",
            id="pair-length",
        ),
        pytest.param(
            edit("{split}.matches[1][1].path.value", "/api/(v"),
            "matches[1]: invalid regular expression",
            id="bad-regex",
        ),
        pytest.param(
            edit("backends.shop/web:80.service.port", "80"),
            "backends.shop/web:80.service.port: must be int, got str '80'",
            id="service-port",
        ),
        pytest.param(
            edit("refs[0].id", "shop/nope:1"),
            "refs[0].id: names no entry of backends: 'shop/nope:1'",
            id="unknown-backend",
        ),
        pytest.param(
            edit("{split}.index", True),
            "{split}.index: must be int, got bool True",
            id="bool-is-not-int",
        ),
        pytest.param(
            edit("hosts", {"x": [99999]}), "malformed snapshot: IndexError", id="dangling-index"
        ),
        pytest.param(
            edit("{split}.index", DELETE),
            "malformed snapshot: KeyError",
            id="missing-key",
        ),
    ],
)
def test_bad_content_is_named(change: Any, message: str) -> None:
    wire = json.loads(json.dumps(snapshot.dump(rich_table())))
    where = split_rule(wire)
    change(wire)
    with pytest.raises(SnapshotError) as caught:
        snapshot.load(resign(wire))
    assert message.replace("{split}", where) in str(caught.value)
    assert isinstance(caught.value, PolicyError)


def test_backends_must_be_an_object() -> None:
    wire = json.loads(json.dumps(snapshot.dump(rich_table())))
    wire["backends"] = []
    with pytest.raises(SnapshotError, match="backends: must be an object, got list"):
        snapshot.load(wire)


def test_the_checksum_must_match_the_content() -> None:
    wire = json.loads(json.dumps(snapshot.dump(rich_table())))
    wire["hosts"][HOST] = wire["hosts"][HOST][:1]
    with pytest.raises(SnapshotError, match=r"checksum: must be '[0-9a-f]{64}' for this content"):
        snapshot.load(wire)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(
            {"schema": "fleetgate.io/snapshot/v0"},
            "got 'fleetgate.io/snapshot/v0'",
            id="other-schema",
        ),
        pytest.param({}, "got None", id="no-schema"),
        pytest.param(["not", "a", "mapping"], "got 'list'", id="not-an-object"),
    ],
)
def test_schema_is_checked_first(data: object, message: str) -> None:
    with pytest.raises(
        SnapshotError, match=r"schema: must be 'fleetgate\.io/snapshot/v2'"
    ) as caught:
        snapshot.load(data)
    assert message in str(caught.value)


def test_data_that_is_not_json_is_refused() -> None:
    wire = copy.deepcopy(snapshot.dump(compile_routes()))
    wire["refs"] = {1, 2}
    with pytest.raises(SnapshotError, match="is not plain JSON data"):
        snapshot.load(wire)


def test_integers_are_accepted_where_floats_are_expected() -> None:
    t = rich_table()
    wire = json.loads(json.dumps(snapshot.dump(t)))
    edit("{split}.settings.timeouts.request_s", 4)(wire)
    edit("{split}.mirrors[0].percent", 12)(wire)
    loaded = snapshot.load(resign(wire))
    entry = loaded.lookup(HOST)
    assert entry is not None
    split = next(r for r in entry.rules if r.rule_id == "shop/main#split")
    assert split.settings.timeouts.request_s == 4.0
    assert isinstance(split.settings.timeouts.request_s, float)
    assert split.mirrors[0].percent == 12.0
    assert isinstance(split.mirrors[0].percent, float)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param({"kind": "Sideways", "value": "/a"}, id="unknown-kind"),
        pytest.param({"kind": "Exact", "value": 3}, id="value-not-a-string"),
        pytest.param({"kind": "Exact", "value": "/a", "extra": 1}, id="unknown-field"),
    ],
)
def test_a_bad_path_match_is_named(path: dict[str, Any]) -> None:
    wire = json.loads(json.dumps(snapshot.dump(rich_table())))
    where = split_rule(wire)
    edit("{split}.matches[0][1]", {"path": path})(wire)
    with pytest.raises(SnapshotError, match=rf"{re.escape(where)}\.matches\[0\]\.path"):
        snapshot.load(resign(wire))


def test_encoded_bytes_are_the_dump_and_are_verified_as_received() -> None:
    t = rich_table()
    body = snapshot.encode(t)
    assert json.loads(body) == json.loads(json.dumps(snapshot.dump(t)))
    snapshot.checksum(compile_routes())  # the canonical JSON kept is now another table's
    assert snapshot.encode(t) == body
    assert snapshot.loads(body) == t
    # Another layout of the same document is verified by encoding it again.
    assert snapshot.loads(json.dumps(snapshot.dump(t), indent=1).encode()) == t
    tampered = body.replace(b'"x-s"', b'"x-z"')
    assert tampered != body
    with pytest.raises(SnapshotError, match=r"checksum: must be '[0-9a-f]{64}' for this content"):
        snapshot.loads(tampered)


def test_endpoint_rows_carry_zone_and_readiness_in_the_targets_order() -> None:
    found = (
        Endpoint("127.0.1.4", 80, "east", zone="", ready=False),
        Endpoint("127.0.1.1", 80, "east"),
        Endpoint("127.0.1.2", 80, "east", zone="e1"),
        Endpoint("127.0.1.3", 80, "east", ready=False),
        Endpoint("127.0.1.1", 80, "east"),  # equal to the second, another object
    )
    checked = dataclasses.replace(EAST, health_check=HealthCheck(path="/ready", interval_s=2))
    policies = PolicySet(routes=(route("r", [HOST]),), clusters=(checked,))
    t = compile_table(policies, Inventory({("east", WEB): found}), version=1)
    wire = json.loads(snapshot.encode(t))
    (target,) = wire["backends"]["shop/web:80"]["targets"]
    assert target["endpoints"] == [
        ["127.0.1.4", 80, "east", "", False],
        ["127.0.1.1", 80, "east"],
        ["127.0.1.2", 80, "east", "e1"],
        ["127.0.1.3", 80, "east", None, False],
        ["127.0.1.1", 80, "east"],
    ]
    assert target["health_check"] == {"path": "/ready", "interval_s": 2}
    assert snapshot.load(wire) == t


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        pytest.param("x", "endpoints: must be a list, got str", id="not-a-list"),
        pytest.param([["h", 80]], "endpoints[0]: must be [host", id="short"),
        pytest.param([["h", 80, "c", None, True, 1]], "endpoints[0]: must be [host", id="long"),
        pytest.param(["h"], "endpoints[0]: must be [host", id="not-a-row"),
        pytest.param([["h", "80", "c"]], "got ['h', '80', 'c']", id="port-type"),
        pytest.param([["h", 80, "c", 5]], "endpoints[0]: must be [host", id="zone-type"),
        pytest.param([["h", 80, "c", None, 1]], "endpoints[0]: must be [host", id="ready-type"),
    ],
)
def test_bad_endpoint_rows_are_named(rows: object, message: str) -> None:
    wire = json.loads(json.dumps(snapshot.dump(rich_table())))
    wire["backends"]["shop/web:80"]["targets"][0]["endpoints"] = rows
    with pytest.raises(SnapshotError) as caught:
        snapshot.load(resign(wire))
    assert "backends.shop/web:80.targets[0].endpoints" in str(caught.value)
    assert message in str(caught.value)
