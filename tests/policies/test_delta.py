"""Delta snapshots: applying one gives the table the full snapshot gives; anything that does not
verify is refused."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from policies import delta, snapshot
from policies.errors import SnapshotError
from policies.model import PolicySet
from policies.table import Endpoint, Inventory, RoutingTable, compile_table
from tests.policies.routing_builders import API, WEB, route
from tests.policies.test_incremental import CLUSTERS, policies
from tests.policies.test_snapshot import rich_table

KEYS = [(c.name, s) for c in CLUSTERS for s in (WEB, API)]


def fleet(generation: int, policy_set: PolicySet | None = None) -> RoutingTable:
    found = {
        key: (Endpoint(f"127.0.9.{1 + generation}", 80, key[0]), Endpoint("127.0.8.1", 80, key[0]))
        for key in KEYS
    }
    return compile_table(policy_set or policies(), Inventory(found), version=generation + 1)


def test_a_delta_carries_the_changed_spreads_and_rebuilds_the_same_table() -> None:
    base, new = fleet(0), fleet(1)
    base_table, digests = snapshot.loads_digested(snapshot.encode(base))
    body = delta.encode_delta(digests, snapshot.parts(new), version=new.version)
    assert body is not None
    assert sorted(json.loads(body)["backends"]) == sorted(
        bid for bid, b in new.backends.items() if b != base.backends[bid]
    )
    table, applied = delta.apply_delta(base_table, digests, body)
    assert table == new
    assert applied == snapshot.parts(new).digests
    assert snapshot.encode(table) == snapshot.encode(new)


def test_a_table_with_mirrors_and_filters_on_references_is_rebased_exactly() -> None:
    t = rich_table()
    moved = {
        bid: dataclasses.replace(
            spread,
            targets=tuple(
                dataclasses.replace(target, endpoints=(Endpoint("127.0.7.7", 81, target.cluster),))
                for target in spread.targets
            ),
        )
        for bid, spread in t.backends.items()
        if spread.resolved
    }
    rebased = delta.with_spreads(t, moved, version=9, checksum="")
    wire = snapshot.dump(dataclasses.replace(rebased, checksum=snapshot.checksum(rebased)))
    assert all(
        e[0] == "127.0.7.7"
        for spread in wire["backends"].values()
        for target in spread["targets"]
        for e in target.get("endpoints", [])
    )
    assert snapshot.load(wire).backends == rebased.backends
    assert delta.with_spreads(t, {}, version=9, checksum="x").hosts == t.hosts


def test_a_change_of_routes_or_spreads_is_no_delta() -> None:
    base, new = fleet(0), fleet(1)
    digests = snapshot.parts(base).digests
    other = policies()
    fewer = dataclasses.replace(other, routes=other.routes[:2])
    assert delta.encode_delta(digests, snapshot.parts(fleet(1, fewer)), version=2) is None
    more = dataclasses.replace(other, routes=(*other.routes, route("x", ["x.test"])))
    assert delta.encode_delta(digests, snapshot.parts(fleet(1, more)), version=2) is None
    assert delta.encode_delta(digests, snapshot.parts(new), version=2) is not None


def delta_data() -> tuple[RoutingTable, snapshot.Digests, dict[str, Any]]:
    base, new = fleet(0), fleet(1)
    digests = snapshot.parts(base).digests
    body = delta.encode_delta(digests, snapshot.parts(new), version=new.version)
    assert body is not None
    return base, digests, json.loads(body)


def resign(data: dict[str, Any], digests: snapshot.Digests) -> dict[str, Any]:
    hashes = dict(digests.backends)
    for bid, spread in data["backends"].items():
        hashes[bid] = snapshot._digest(spread)
    return {**data, "checksum": snapshot.combine(digests.routes, hashes)}


def first_spread(data: dict[str, Any]) -> dict[str, Any]:
    spread: dict[str, Any] = next(iter(data["backends"].values()))
    return spread


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(lambda d: d.update(schema="x"), "schema: must be", id="schema"),
        pytest.param(lambda d: d.pop("base"), "a delta must have the keys", id="keys"),
        pytest.param(lambda d: d.update(base="0" * 64), "base: the delta applies to", id="base"),
        pytest.param(lambda d: d.update(backends=[]), "backends: must be an object", id="list"),
        pytest.param(
            lambda d: d.update(backends={"shop/nope:1": {}}), "has no spreads", id="unknown"
        ),
        pytest.param(
            lambda d: first_spread(d)["targets"][0].update(weight=7),
            "checksum: must be",
            id="tampered",
        ),
    ],
)
def test_a_delta_that_does_not_apply_is_refused(change: Any, message: str) -> None:
    base, digests, data = delta_data()
    change(data)
    with pytest.raises(SnapshotError, match=message):
        delta.apply_delta(base, digests, json.dumps(data).encode())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(lambda d: d.update(version="2"), "version: must be an integer", id="version"),
        pytest.param(
            lambda d: d["backends"].update({k: [] for k in d["backends"]}),
            "must be an object, got list",
            id="spread-not-object",
        ),
        pytest.param(
            lambda d: first_spread(d).update(weight=2), "plain spreads only", id="reference"
        ),
        pytest.param(lambda d: first_spread(d).update(mirrors=[]), "plain spreads", id="extra"),
        pytest.param(
            lambda d: first_spread(d).update(resolved=False), "changes more than", id="resolution"
        ),
        pytest.param(
            lambda d: first_spread(d)["targets"][0].update(endpoints=[["h"]]),
            "endpoints[0]: must be [host",
            id="endpoint-row",
        ),
        pytest.param(lambda d: first_spread(d).pop("service"), "KeyError", id="missing"),
    ],
)
def test_a_delta_that_is_malformed_is_refused(change: Any, message: str) -> None:
    base, digests, data = delta_data()
    change(data)
    with pytest.raises(SnapshotError, match=message.replace("[", r"\[")):
        delta.apply_delta(base, digests, json.dumps(resign(data, digests)).encode())


def test_with_spreads_refuses_what_is_more_than_new_targets() -> None:
    t = fleet(0)
    spread = t.backends["shop/web:80"]
    with pytest.raises(ValueError, match="has no spread"):
        delta.with_spreads(t, {"shop/x:1": spread}, version=2, checksum="")
    weighted = dataclasses.replace(spread, weight=2)
    with pytest.raises(ValueError, match="changes more than its targets"):
        delta.with_spreads(t, {spread.id: weighted}, version=2, checksum="")


def test_incremental_parts_need_the_same_spreads() -> None:
    base, other = fleet(0), rich_table()
    with pytest.raises(ValueError, match="same spreads"):
        snapshot.parts(other, previous=snapshot.parts(base))
    mirrored = next(
        b for r in other.hosts.values() for x in r.rules for b in x.backends if b.mirrors
    )
    with pytest.raises(ValueError, match="has mirrors"):
        snapshot.spread_json(mirrored)
