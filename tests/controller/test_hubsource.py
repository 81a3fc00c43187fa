"""The hub source: objects → policy sets (pure `load_hub`), and list+watch of the simulated hub."""

from __future__ import annotations

import dataclasses

from controller import hubsource, objects
from controller.hubsource import HubLoad, HubSettings, HubSource
from policies.model import Severity
from tests.conftest import eventually
from tests.controller.conftest import FAST_WATCH, Connect, StartSimulator
from tests.controller.hub_objects import (
    HTTP_ROUTE_KIND,
    TRAFFIC_POLICY_KIND,
    http_route,
    hub_document,
    member_cluster,
    reference_grant,
    traffic_policy,
)
from tests.controller.test_watching import running

EAST = member_cluster("east", static=["127.0.1.1:8080"])
# Deadline for waits that go through several Kubernetes client round trips on a loaded machine.
LOADED_S = 20.0


def routes(load: HubLoad) -> dict[str, tuple[str, ...]]:
    return {route.id: route.hostnames for route in load.policies.routes}


# -- pure: objects → documents → policy set ----------------------------------------------------


def test_display_names_and_documents_leave_server_fields_out() -> None:
    doc = hub_document(traffic_policy("web", hostnames=["a.example.com"]))
    cluster = hub_document(EAST)
    assert doc.name == "k8s:TrafficPolicy/shop/web"
    assert cluster.name == "k8s:MemberCluster/east"
    assert "uid" not in doc.text
    assert "resourceVersion" not in doc.text
    assert doc.text.startswith("apiVersion: fleetgate.io/v1alpha1\nkind: TrafficPolicy\n")


def test_problems_name_the_object_they_are_about() -> None:
    bad = traffic_policy("web")
    bad["spec"]["rules"][0]["backendRefs"][0]["weight"] = -3
    load, _ = hubsource.load_hub([hub_document(EAST), hub_document(bad)], {})
    errors = [p for p in load.result.problems if p.severity is Severity.ERROR]
    assert [str(p).split(":")[0:2] for p in errors] == [["k8s", "TrafficPolicy/shop/web"]]
    assert errors[0].path == "spec.rules[0].backendRefs[0].weight"
    assert load.problems_of("k8s:TrafficPolicy/shop/web") == tuple(errors)
    assert not load.accepted("k8s:TrafficPolicy/shop/web")
    assert load.accepted("k8s:MemberCluster/east")
    assert load.policies.routes == ()


def test_a_rejected_edit_keeps_the_earlier_generation_served() -> None:
    good = hub_document(traffic_policy("web", hostnames=["a.example.com"]), generation=1)
    first, last_good = hubsource.load_hub([hub_document(EAST), good], {})
    assert routes(first) == {"shop/web": ("a.example.com",)}

    edit = traffic_policy("web", hostnames=["b.example.com"])
    edit["spec"]["rules"][0]["backendRefs"][0]["port"] = "eighty"
    second, last_good = hubsource.load_hub(
        [hub_document(EAST), hub_document(edit, generation=2)], last_good
    )
    assert routes(second) == {"shop/web": ("a.example.com",)}  # generation 1 still served
    assert second.held["k8s:TrafficPolicy/shop/web"].obj.meta.generation == 1
    assert not second.accepted("k8s:TrafficPolicy/shop/web")
    problem = second.problems_of("k8s:TrafficPolicy/shop/web")[0]
    assert problem.path == "spec.rules[0].backendRefs[0].port"

    fixed = traffic_policy("web", hostnames=["c.example.com"])
    third, last_good = hubsource.load_hub(
        [hub_document(EAST), hub_document(fixed, generation=3)], last_good
    )
    assert routes(third) == {"shop/web": ("c.example.com",)}
    assert third.held == {}
    assert third.accepted("k8s:TrafficPolicy/shop/web")


def test_a_recreated_object_does_not_inherit_the_old_ones_generation() -> None:
    good = hub_document(traffic_policy("web"), uid="one")
    _, last_good = hubsource.load_hub([hub_document(EAST), good], {})
    bad = traffic_policy("web")
    bad["spec"]["rules"] = "none"
    load, _ = hubsource.load_hub([hub_document(EAST), hub_document(bad, uid="two")], last_good)
    assert load.policies.routes == ()
    assert load.held == {}


def test_a_hostname_owned_by_another_namespace_is_refused_naming_the_owner() -> None:
    owner = traffic_policy("store", namespace="shop", hostnames=["shop.example.com"])
    owner["metadata"]["creationTimestamp"] = "2024-01-01T00:00:00Z"
    thief = http_route("grab", namespace="other", hostnames=["shop.example.com"])
    thief["metadata"]["creationTimestamp"] = "2024-02-01T00:00:00Z"
    load, _ = hubsource.load_hub([hub_document(EAST), hub_document(thief), hub_document(owner)], {})
    assert routes(load) == {"shop/store": ("shop.example.com",)}
    [problem] = load.problems_of("k8s:HTTPRoute/other/grab")
    assert problem.path == "spec.hostnames[0]"
    assert 'belongs to namespace "shop"' in problem.message
    assert "shop/store" in problem.message


def test_cross_namespace_references_need_a_grant() -> None:
    policy = traffic_policy("web", namespace="edge", service_namespace="shop")
    load, _ = hubsource.load_hub([hub_document(EAST), hub_document(policy)], {})
    assert load.accepted("k8s:TrafficPolicy/edge/web")  # accepted, the reference refused
    assert [route for route, _ in load.refused] == ["edge/web"]
    grant = reference_grant("edge", namespace="shop", from_namespace="edge", service="web")
    load, _ = hubsource.load_hub(
        [hub_document(EAST), hub_document(policy), hub_document(grant)], {}
    )
    assert load.refused == frozenset()


# -- against the simulated hub ------------------------------------------------------------------


async def test_follows_the_hub_and_ignores_status_writes(
    start_simulator: StartSimulator, connect: Connect
) -> None:
    hub = await start_simulator("hub")
    hub.store.upsert(EAST)
    hub.store.upsert(traffic_policy("web", hostnames=["a.example.com"]))
    loads: list[HubLoad] = []
    source = HubSource(
        await connect(hub), HubSettings(watch=FAST_WATCH, debounce_s=0.01), loads.append
    )
    async with running(source.run()):
        await eventually(lambda: bool(loads))
        assert routes(loads[-1]) == {"shop/web": ("a.example.com",)}
        assert source.status.synced
        assert source.status.objects == 2

        hub.store.upsert(traffic_policy("web", hostnames=["b.example.com"]))
        hub.store.upsert(http_route("api", hostnames=["api.example.com"], service="api"))
        # Two watch streams: the edits may arrive in one load or two, in either order.
        both = {"shop/web": ("b.example.com",), "shop/api": ("api.example.com",)}
        await eventually(lambda: routes(loads[-1]) == both)

        # A status write (the leader's own) is seen, but changes no policy: no new load.
        count = len(loads)
        current = hub.store.get(HTTP_ROUTE_KIND, "shop", "api")
        hub.store.replace(
            HTTP_ROUTE_KIND, "shop", "api", {**current, "status": {"parents": []}}, status=True
        )
        status_rv = hub.store.rv
        await eventually(
            lambda: (
                (doc := source.current(objects.HTTP_ROUTES, "shop", "api")) is not None
                and doc.obj.meta.resource_version == str(status_rv)
            )
        )
        hub.store.delete(TRAFFIC_POLICY_KIND, "shop", "web")
        await eventually(lambda: list(routes(loads[-1])) == ["shop/api"])
        # Exactly one load since: the delete's. The status write made none, and a change that
        # arrived as the debounce ended made no second, identical load (it once did, under
        # uvloop: see HubSource._load_loop).
        assert len(loads) == count + 1


async def test_nothing_is_delivered_before_every_kind_is_listed(
    start_simulator: StartSimulator, connect: Connect
) -> None:
    hub = await start_simulator("hub")
    hub.store.upsert(EAST)
    hub.store.upsert(traffic_policy("web"))
    hub.fail_next(500, count=3, match=lambda r: "releases" in r.path and not r.is_watch)
    loads: list[HubLoad] = []
    source = HubSource(
        await connect(hub), HubSettings(watch=FAST_WATCH, debounce_s=0.01), loads.append
    )
    async with running(source.run()):
        await eventually(lambda: bool(loads))
        # The first load already has the cluster and the policy: no half-synced set went out.
        assert routes(loads[0]) == {"shop/web": ("shop.example.com",)}
        assert [c.name for c in loads[0].policies.clusters] == ["east"]
        assert source.status.watches["releases.fleetgate.io"].failures == 3


async def test_an_expired_watch_relists_without_losing_a_change(
    start_simulator: StartSimulator, connect: Connect
) -> None:
    # Bookmarks keep a live but quiet stream from counting as stalled (FAST_WATCH.stall_s).
    hub = await start_simulator("hub", bookmark_interval_s=1.0)
    hub.store.upsert(EAST)
    hub.store.upsert(traffic_policy("web", hostnames=["a.example.com"]))
    loads: list[HubLoad] = []
    settings = HubSettings(watch=dataclasses.replace(FAST_WATCH), debounce_s=0.01)
    source = HubSource(await connect(hub), settings, loads.append)
    async with running(source.run()):
        await eventually(lambda: bool(loads))
        hub.drop_watches()  # the watchers resume from their resourceVersion...
        hub.store.upsert(traffic_policy("web", hostnames=["z.example.com"]))
        hub.compact()  # ...which is gone by then: 410, relist
        # Every hub watcher resumes, gets its 410 and relists (about 15 requests through the
        # Kubernetes client) before the load: under 0.4 s on an idle machine, about 1 s at load 5
        # on 2 cores, and once more than the default 5 s in a loaded full-suite run. The deadline
        # is for the machine; that the change came by the relist, not by a stalled stream being
        # restarted (FAST_WATCH.stall_s is also 5 s), is asserted below.
        await eventually(
            lambda: routes(loads[-1]) == {"shop/web": ("z.example.com",)}, timeout_s=LOADED_S
        )
        stats = source.status.watches["trafficpolicies.fleetgate.io"]
        assert stats.expired >= 1
        assert stats.lists >= 2
        assert stats.stalls == 0
