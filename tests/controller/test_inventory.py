"""controller.inventory: EndpointSlices and Services → Inventory. Pure: no loop, no sockets."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller import inventory, objects
from controller.inventory import Observed, apply_event, replace_all, to_inventory
from policies.model import ServiceRef
from policies.table import Endpoint
from tests.controller.kube_objects import (
    JSON,
    as_object,
    endpoint,
    endpoint_slice,
    event,
    service,
)

WEB = ServiceRef("shop", "web", 80)


def synced(cluster: str, services: list[JSON], slices: list[JSON]) -> Observed:
    observed = replace_all(Observed(), cluster, objects.SERVICES, map(as_object, services))
    return replace_all(observed, cluster, objects.ENDPOINT_SLICES, map(as_object, slices))


@pytest.mark.parametrize(
    ("conditions", "expected_ready"),
    [
        pytest.param({"ready": True}, True, id="ready"),
        pytest.param({"ready": None}, True, id="ready-unset-means-ready"),
        pytest.param({"ready": False, "serving": True, "terminating": True}, False, id="draining"),
        pytest.param({"ready": False, "serving": False, "terminating": True}, None, id="gone"),
        pytest.param({"ready": False}, None, id="not-ready-not-terminating"),
        pytest.param({"ready": False, "serving": True}, None, id="serving-not-terminating"),
    ],
)
def test_slice_conditions(conditions: dict[str, Any], expected_ready: bool | None) -> None:
    observed = synced(
        "a",
        [service("web")],
        [
            endpoint_slice(
                "web-1", service_name="web", endpoints=[endpoint("10.0.0.1", **conditions)]
            )
        ],
    )
    endpoints = to_inventory(observed).endpoints[("a", WEB)]
    if expected_ready is None:
        assert endpoints == ()
    else:
        assert endpoints == (Endpoint("10.0.0.1", 8080, "a", ready=expected_ready),)


@pytest.mark.parametrize(
    ("zone", "hints", "expected"),
    [
        pytest.param("eu-1a", (), "eu-1a", id="own-zone"),
        pytest.param(None, (), None, id="no-zone"),
        pytest.param("eu-1a", ("eu-1b",), "eu-1b", id="hinted-elsewhere"),
        pytest.param("eu-1a", ("eu-1b", "eu-1a"), "eu-1a", id="hint-includes-own-zone"),
    ],
)
def test_zone_and_hints(zone: str | None, hints: tuple[str, ...], expected: str | None) -> None:
    observed = synced(
        "a",
        [service("web")],
        [
            endpoint_slice(
                "web-1",
                service_name="web",
                endpoints=[endpoint("10.0.0.1", zone=zone, hints=hints)],
            )
        ],
    )
    (only,) = to_inventory(observed).endpoints[("a", WEB)]
    assert only.zone == expected


def test_ports_match_by_name_and_use_the_slice_port_number() -> None:
    observed = synced(
        "a",
        [service("web", ports=[("http", 80), ("admin", 9000)])],
        [
            endpoint_slice(
                "web-1",
                service_name="web",
                endpoints=[endpoint("10.0.0.1")],
                ports=[("admin", 9901), ("http", 8080), ("metrics", 9090)],
            ),
            endpoint_slice(
                "web-2",
                service_name="web",
                endpoints=[endpoint("10.0.0.2")],
                ports=[("http", 8081)],
            ),
        ],
    )
    endpoints = to_inventory(observed).endpoints
    assert [e.address for e in endpoints[("a", WEB)]] == ["10.0.0.1:8080", "10.0.0.2:8081"]
    assert [e.address for e in endpoints[("a", ServiceRef("shop", "web", 9000))]] == [
        "10.0.0.1:9901"
    ]
    assert len(endpoints) == 2  # the metrics port has no Service port


def test_duplicate_addresses_are_listed_once_ready_wins() -> None:
    draining = endpoint("10.0.0.1", ready=False, serving=True, terminating=True)
    observed = synced(
        "a",
        [service("web")],
        [
            endpoint_slice("web-1", service_name="web", endpoints=[draining]),
            endpoint_slice("web-2", service_name="web", endpoints=[endpoint("10.0.0.1")]),
        ],
    )
    assert to_inventory(observed).endpoints[("a", WEB)] == (Endpoint("10.0.0.1", 8080, "a"),)


def test_a_service_without_endpoints_is_present_and_empty() -> None:
    observed = synced("a", [service("web")], [])
    assert to_inventory(observed).endpoints == {("a", WEB): ()}


def test_external_name_services_and_foreign_slices_yield_nothing() -> None:
    external = service("ext")
    external["spec"]["type"] = "ExternalName"
    observed = synced(
        "a",
        [external],
        [endpoint_slice("orphan-1", service_name="orphan", endpoints=[endpoint("10.0.0.9")])],
    )
    assert to_inventory(observed).endpoints == {}


def test_a_cluster_is_published_only_once_both_kinds_are_listed() -> None:
    half = replace_all(Observed(), "a", objects.SERVICES, [as_object(service("web"))])
    assert to_inventory(half).endpoints == {}
    full = replace_all(half, "a", objects.ENDPOINT_SLICES, [])
    assert to_inventory(full).endpoints == {("a", WEB): ()}


def test_withdrawn_and_removed_clusters_leave_the_inventory() -> None:
    slices = [endpoint_slice("web-1", service_name="web", endpoints=[endpoint("10.0.0.1")])]
    observed = synced("a", [service("web")], slices)
    observed = replace_all(observed, "b", objects.SERVICES, [as_object(service("web"))])
    observed = replace_all(observed, "b", objects.ENDPOINT_SLICES, map(as_object, slices))
    assert set(to_inventory(observed).endpoints) == {("a", WEB), ("b", WEB)}
    assert set(to_inventory(observed, withdrawn={"b"}).endpoints) == {("a", WEB)}
    assert set(to_inventory(inventory.remove_cluster(observed, "a")).endpoints) == {("b", WEB)}


def test_events_follow_services_and_slices() -> None:
    observed = synced("a", [], [])
    slice_1 = endpoint_slice("web-1", service_name="web", endpoints=[endpoint("10.0.0.1")])
    observed = apply_event(observed, "a", objects.ENDPOINT_SLICES, event("ADDED", slice_1))
    assert to_inventory(observed).endpoints == {}  # no Service yet
    observed = apply_event(observed, "a", objects.SERVICES, event("ADDED", service("web")))
    assert [e.host for e in to_inventory(observed).endpoints[("a", WEB)]] == ["10.0.0.1"]

    renumbered = service("web", ports=[("http", 81)])
    observed = apply_event(observed, "a", objects.SERVICES, event("MODIFIED", renumbered))
    assert list(to_inventory(observed).endpoints) == [("a", ServiceRef("shop", "web", 81))]

    moved = endpoint_slice("web-1", service_name="api", endpoints=[endpoint("10.0.0.1")])
    observed = apply_event(observed, "a", objects.ENDPOINT_SLICES, event("MODIFIED", moved))
    assert to_inventory(observed).endpoints == {("a", ServiceRef("shop", "web", 81)): ()}

    observed = apply_event(observed, "a", objects.SERVICES, event("DELETED", renumbered))
    assert to_inventory(observed).endpoints == {}


# -- property: any sequence of events ends where a fresh LIST of the final state would --------

ADDRESSES = ("10.0.0.1", "10.0.0.2", "10.0.0.3")
CONDITIONS = st.sampled_from(
    [
        {"ready": True},
        {"ready": None},
        {"ready": False, "serving": True, "terminating": True},
        {"ready": False, "serving": False, "terminating": True},
    ]
)
SERVICE_SPECS = st.lists(st.sampled_from([("http", 80), ("admin", 9000)]), unique=True)
SLICE_SPECS = st.tuples(
    st.sampled_from(["web", "api"]),
    st.lists(st.tuples(st.sampled_from(ADDRESSES), CONDITIONS), max_size=3),
    st.lists(st.sampled_from([("http", 8080), ("admin", 9901)]), unique=True),
)
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("service"), st.sampled_from(["web", "api"]), st.none() | SERVICE_SPECS),
        st.tuples(st.just("slice"), st.sampled_from(["s1", "s2", "s3"]), st.none() | SLICE_SPECS),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(steps=STEPS)
def test_events_converge_on_the_listed_state(steps: list[tuple[Any, ...]]) -> None:
    truth: dict[tuple[str, str], JSON] = {}
    observed = synced("a", [], [])
    for kind, name, spec in steps:
        resource = objects.SERVICES if kind == "service" else objects.ENDPOINT_SLICES
        key = (kind, name)
        if spec is None:
            if key not in truth:
                continue
            change = event("DELETED", truth.pop(key))
        else:
            if kind == "service":
                raw = service(name, ports=spec)
            else:
                owner, members, ports = spec
                raw = endpoint_slice(
                    name,
                    service_name=owner,
                    endpoints=[endpoint(a, **c) for a, c in members],
                    ports=ports,
                )
            change = event("MODIFIED" if key in truth else "ADDED", raw)
            truth[key] = raw
        observed = apply_event(observed, "a", resource, change)
        assert apply_event(observed, "a", resource, change) == observed  # replays are harmless
    listed = synced(
        "a",
        [raw for (kind, _), raw in truth.items() if kind == "service"],
        [raw for (kind, _), raw in truth.items() if kind == "slice"],
    )
    assert to_inventory(observed) == to_inventory(listed)
