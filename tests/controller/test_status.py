"""Conditions, Events and the status document: pure rules, then a Kubernetes-mode controller on
a simulated hub and member clusters (leader-only writes, hostname ownership, member outages)."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from controller import hubsource, kube_config, status
from controller.health import HealthSettings
from controller.hubsource import HubSettings
from controller.kubemode import KubeController, KubeModeSettings
from controller.members import MemberSettings
from controller.reconcile import ReconcileSettings
from controller.status import ClusterReadiness, Condition, Context
from fleetgate import status_cmd
from policies.model import ServiceRef
from tests.conftest import eventually
from tests.controller.conftest import FAST_KUBE, FAST_WATCH, StartSimulator
from tests.controller.hub_objects import (
    EVENT_KIND,
    HTTP_ROUTE_KIND,
    MEMBER_CLUSTER_KIND,
    TRAFFIC_POLICY_KIND,
    http_route,
    hub_document,
    member_cluster,
    traffic_policy,
)
from tests.controller.kube_objects import endpoint, endpoint_slice, service
from tests.controller.test_watching import running
from tests.fakes.kube_api import KubeApiSimulator
from tests.fakes.kube_config import write_kubeconfig

WEB = ServiceRef("shop", "web", 80)
EAST = member_cluster("east", static=["127.0.1.1:8080"])


def by_type(conditions: tuple[Condition, ...]) -> dict[str, tuple[bool | None, str]]:
    return {c.type: (c.status, c.reason) for c in conditions}


def context(version: int | None = 7, **changes: Any) -> Context:
    base = Context(version=version, services=frozenset({WEB}), clusters={})
    return dataclasses.replace(base, **changes)


# -- pure rules ---------------------------------------------------------------------------------


def test_an_accepted_policy_is_programmed_once_a_snapshot_serves_it() -> None:
    docs = [hub_document(EAST), hub_document(traffic_policy("web"))]
    load, _ = hubsource.load_hub(docs, {})
    policy = load.documents[1]
    assert by_type(status.conditions_for(policy, load, context(None))) == {
        "Accepted": (True, "Accepted"),
        "ResolvedRefs": (True, "ResolvedRefs"),
        "Programmed": (False, "Pending"),
    }
    conditions = status.conditions_for(policy, load, context(7))
    assert by_type(conditions)["Programmed"] == (True, "Programmed")
    assert "v7" in conditions[-1].message
    assert {c.observed_generation for c in conditions} == {1}
    assert status.conditions_for(hub_document(EAST), load, context())[0].status is True


def test_hostname_conflict_names_the_owner() -> None:
    owner = traffic_policy("store", hostnames=["shop.example.com"])
    owner["metadata"]["creationTimestamp"] = "2024-01-01T00:00:00Z"
    thief = http_route("grab", namespace="other", hostnames=["shop.example.com"])
    thief["metadata"]["creationTimestamp"] = "2024-03-01T00:00:00Z"
    load, _ = hubsource.load_hub([hub_document(EAST), hub_document(owner), hub_document(thief)], {})
    grab = next(d for d in load.documents if d.obj.meta.name == "grab")
    accepted = status.conditions_for(grab, load, context())[0]
    assert (accepted.type, accepted.status, accepted.reason) == (
        "Accepted",
        False,
        "HostnameConflict",
    )
    assert 'belongs to namespace "shop"' in accepted.message
    assert "shop/store" in accepted.message
    assert by_type(status.conditions_for(grab, load, context()))["Programmed"] == (False, "Invalid")


def test_refused_and_missing_references() -> None:
    policy = traffic_policy("web", namespace="edge", service_namespace="shop")
    load, _ = hubsource.load_hub([hub_document(EAST), hub_document(policy)], {})
    conditions = by_type(status.conditions_for(load.documents[1], load, context()))
    assert conditions["Accepted"] == (True, "Accepted")  # accepted; its reference refused
    assert conditions["ResolvedRefs"] == (False, "RefNotPermitted")

    other = traffic_policy("api", service="api")
    load, _ = hubsource.load_hub([hub_document(EAST), hub_document(other)], {})
    resolved = status.conditions_for(load.documents[1], load, context())[1]
    assert (resolved.status, resolved.reason) == (False, "BackendNotFound")
    assert "no MemberCluster is known to have Service shop/api" in resolved.message

    # Discovered clusters: judged by what the member clusters have now.
    discovered = hub_document(member_cluster("east", kubeconfig="east.kubeconfig"))
    load, _ = hubsource.load_hub([discovered, hub_document(other)], {})
    resolved = status.conditions_for(load.documents[1], load, context())[1]
    assert (resolved.status, resolved.reason) == (False, "BackendNotFound")
    assert "shop/api:80" in resolved.message
    unknown = dataclasses.replace(context(), services=frozenset())  # inventory not synced yet
    assert status.conditions_for(load.documents[1], load, unknown)[1].status is True


def test_a_held_generation_is_reported_with_the_problems_of_the_new_one() -> None:
    good = hub_document(traffic_policy("web"), generation=1)
    _, last_good = hubsource.load_hub([hub_document(EAST), good], {})
    bad = traffic_policy("web")
    bad["spec"]["rules"][0]["backendRefs"][0]["port"] = 0
    load, _ = hubsource.load_hub([hub_document(EAST), hub_document(bad, generation=2)], last_good)
    conditions = status.conditions_for(load.documents[1], load, context())
    assert by_type(conditions)["Accepted"] == (False, "Invalid")
    assert "generation 1 keeps being served" in conditions[0].message
    assert "spec.rules[0].backendRefs[0].port" in conditions[0].message
    assert by_type(conditions)["Programmed"] == (False, "Held")
    assert {c.observed_generation for c in conditions} == {2}


def test_member_cluster_readiness_condition() -> None:
    load, _ = hubsource.load_hub([hub_document(EAST)], {})
    down = ClusterReadiness(False, "Unreachable", "cluster 'east' is unreachable")
    ctx = context(clusters={"east": down})
    ready = status.conditions_for(load.documents[0], load, ctx)[-1]
    assert (ready.type, ready.status, ready.reason) == ("Ready", False, "Unreachable")


def test_status_patches_keep_transition_times_and_settle() -> None:
    doc = hub_document(traffic_policy("web"))
    load, _ = hubsource.load_hub([hub_document(EAST), doc], {})
    conditions = status.conditions_for(doc, load, context(7))
    patch = status.desired_status(doc, conditions, now="2024-01-01T00:00:00Z")
    assert patch is not None
    assert patch["observedGeneration"] == 1
    shown = hub_document({**traffic_policy("web"), "status": patch})
    # The same conditions later: nothing to write.
    assert status.desired_status(shown, conditions, now="2024-06-01T00:00:00Z") is None
    # A newer snapshot does not rewrite Programmed (it keeps the version it first appeared in).
    newer = status.conditions_for(doc, load, context(9))
    assert status.desired_status(shown, newer, now="2024-06-01T00:00:00Z") is None
    # A real change: the changed condition gets a new time, the others keep theirs.
    missing = dataclasses.replace(context(9), services=frozenset({ServiceRef("x", "y", 1)}))
    changed = status.conditions_for(doc, load, missing)
    patch2 = status.desired_status(shown, changed, now="2024-06-01T00:00:00Z")
    assert patch2 is not None
    times = {c["type"]: c["lastTransitionTime"] for c in patch2["conditions"]}
    assert times == {
        "Accepted": "2024-01-01T00:00:00Z",
        "ResolvedRefs": "2024-06-01T00:00:00Z",
        "Programmed": "2024-01-01T00:00:00Z",
    }
    assert [c.type for c in status.changed_conditions(shown, changed)] == ["ResolvedRefs"]


def test_http_route_status_keeps_other_controllers_parents() -> None:
    route = http_route("api", hostnames=["api.example.com"])
    foreign = {"parentRef": {"name": "other"}, "controllerName": "example.com/x", "conditions": []}
    route["status"] = {"parents": [foreign]}
    doc = hub_document(route)
    load, _ = hubsource.load_hub([hub_document(EAST), doc], {})
    patch = status.desired_status(doc, status.conditions_for(doc, load, context()), now="t")
    assert patch is not None
    assert patch["parents"][0] == foreign
    assert patch["parents"][1]["parentRef"] == {"name": "fleetgate"}
    assert patch["parents"][1]["controllerName"] == status.CONTROLLER_NAME


def test_events_are_warnings_for_refusals() -> None:
    doc = hub_document(EAST)
    refused = Condition("Accepted", False, "Invalid", "spec.priority: bad", 3)
    body = status.event_body(doc, refused, now="t", serial=255)
    assert body["type"] == "Warning"
    assert body["metadata"] == {"name": "east.ff", "namespace": "default"}
    assert body["involvedObject"]["kind"] == "MemberCluster"
    assert body["reason"] == "Invalid"
    ok = Condition("Programmed", True, "Programmed", "served", 3)
    assert status.event_body(doc, ok, now="t", serial=1)["type"] == "Normal"


# -- a Kubernetes-mode controller on simulated clusters -----------------------------------------


def fast_settings(identity: str, hub_kubeconfig: Path) -> KubeModeSettings:
    return KubeModeSettings(
        identity=identity,
        lease_namespace="fleetgate",
        hub_kubeconfig=hub_kubeconfig,
        member_kubeconfigs="file",
        lease_duration_s=3.0,
        renew_deadline_s=2.0,
        retry_period_s=0.1,
        connect_retry_s=0.05,
        status_interval_s=0.01,
        kube=FAST_KUBE,
        hub=HubSettings(watch=FAST_WATCH, debounce_s=0.01),
        members=MemberSettings(
            watch=FAST_WATCH,
            health=HealthSettings(
                interval_s=0.02, failure_threshold=2, success_threshold=1, grace_s=1.0
            ),
        ),
        reconcile=ReconcileSettings(debounce_s=0.01, max_delay_s=0.1),
    )


@dataclasses.dataclass
class Fleet:
    hub: KubeApiSimulator
    members: list[KubeApiSimulator]
    hub_kubeconfig: Path


@pytest.fixture
async def fleet(start_simulator: StartSimulator, tmp_path: Path) -> Fleet:
    hub = await start_simulator("hub")
    members = []
    for index, name in enumerate(("east", "west"), start=1):
        sim = await start_simulator(name)
        sim.store.upsert(service("web"))
        sim.store.upsert(
            endpoint_slice(
                "web-1",
                service_name="web",
                endpoints=[
                    endpoint(f"127.0.{index}.1"),
                    endpoint(f"127.0.{index}.2", ready=False, serving=True, terminating=True),
                ],
            )
        )
        path = write_kubeconfig(tmp_path / f"{name}.kubeconfig", [sim])
        hub.store.upsert(member_cluster(name, kubeconfig=str(path), priority=index - 1))
        members.append(sim)
    hub.store.upsert(traffic_policy("store", clusters=["east", "west"]))
    return Fleet(hub, members, write_kubeconfig(tmp_path / "hub.kubeconfig", [hub]))


@pytest.fixture
async def controllers(fleet: Fleet) -> AsyncIterator[list[KubeController]]:
    made: list[KubeController] = []
    clients = []
    for identity in ("one", "two"):
        client = await kube_config.connect("hub", fleet.hub_kubeconfig, settings=FAST_KUBE)
        clients.append(client)
        made.append(KubeController(fast_settings(identity, fleet.hub_kubeconfig), client))
    yield made
    for client in clients:
        await client.close()


def conditions_of(
    sim: KubeApiSimulator, kind: Any, namespace: str | None, name: str
) -> dict[str, tuple[str, str, str]]:
    obj = sim.store.get(kind, namespace, name)
    found = (obj.get("status") or {}).get("conditions") or []
    if kind == HTTP_ROUTE_KIND:
        parents = (obj.get("status") or {}).get("parents") or [{}]
        found = parents[-1].get("conditions") or []
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in found}


def condition_is(
    sim: KubeApiSimulator, kind: Any, namespace: str | None, name: str, type_: str, state: str
) -> bool:
    return conditions_of(sim, kind, namespace, name).get(type_, ("", ""))[:2] == tuple(
        state.split("/")
    )


# Deadline for polls that wait on the leader's writes: on a loaded machine the tiny test lease can
# change hands mid-test, and the new leader writes only after the old lease expires.
LOADED_S = 20.0


async def test_the_leader_writes_conditions_and_events(
    fleet: Fleet, controllers: list[KubeController]
) -> None:
    one, two = controllers
    hub = fleet.hub
    async with running(one.run(), two.run()):
        # Electing the first leader takes Lease writes that can time out on a loaded machine.
        await eventually(lambda: one.elector.is_leader or two.elector.is_leader, timeout_s=LOADED_S)
        leader, standby = (one, two) if one.elector.is_leader else (two, one)
        await eventually(
            lambda: condition_is(
                hub, TRAFFIC_POLICY_KIND, "shop", "store", "Programmed", "True/Programmed"
            ),
            timeout_s=LOADED_S,
        )
        assert condition_is(hub, MEMBER_CLUSTER_KIND, None, "east", "Ready", "True/Ready")

        # Both replicas serve the same content; only the leader wrote.
        def same_content() -> bool:
            mine, theirs = leader.publisher.latest, standby.publisher.latest
            return mine is not None and theirs is not None and mine.checksum == theirs.checksum

        await eventually(same_content, timeout_s=LOADED_S)
        assert standby.writer.stats.patches == 0
        assert leader.writer.stats.patches >= 3

        # A policy in another namespace claims the hostname: refused, naming the owner.
        # creationTimestamp has one-second resolution, so when both were created in the same
        # second the tie goes to namespace/name order (as in Gateway API): the thief's
        # namespace sorts after "shop" so that the later object loses either way.
        thief_ns = "web-team"
        hub.store.upsert(http_route("grab", namespace=thief_ns, hostnames=["shop.example.com"]))
        await eventually(
            lambda: condition_is(
                hub, HTTP_ROUTE_KIND, thief_ns, "grab", "Accepted", "False/HostnameConflict"
            ),
            timeout_s=LOADED_S,
        )
        message = conditions_of(hub, HTTP_ROUTE_KIND, thief_ns, "grab")["Accepted"][2]
        assert "shop/store" in message

        def grab_events() -> list[tuple[str, str]]:
            events, _ = hub.store.list_objects(EVENT_KIND)
            return [
                (e["type"], e["reason"]) for e in events if e["involvedObject"]["name"] == "grab"
            ]

        await eventually(
            lambda: ("Warning", "HostnameConflict") in grab_events(), timeout_s=LOADED_S
        )

        # The status document says who serves what.
        document = leader.status_document()
        assert document["controller"]["leader"] is True
        east = next(c for c in document["clusters"] if c["name"] == "east")
        assert east["state"] == "up"
        assert east["services"] == [{"service": "shop/web:80", "ready": 1, "total": 2}]
        grab = next(p for p in document["policies"] if p["name"] == "grab")
        assert grab["accepted"] is False


async def test_a_member_cluster_that_goes_away_is_marked_down_then_withdrawn(
    fleet: Fleet, controllers: list[KubeController]
) -> None:
    one = controllers[0]
    hub, east = fleet.hub, fleet.members[0]

    def hosts() -> set[str]:
        latest = one.publisher.latest
        if latest is None:
            return set()
        return {
            e.host for b in latest.table.backends.values() for t in b.targets for e in t.endpoints
        }

    async with running(one.run()):
        await eventually(lambda: {"127.0.1.1", "127.0.2.1"} <= hosts())
        await eventually(
            lambda: condition_is(hub, MEMBER_CLUSTER_KIND, None, "east", "Ready", "True/Ready")
        )
        await east.stop()

        def east_events() -> list[tuple[str, str]]:
            events, _ = hub.store.list_objects(EVENT_KIND)
            return [
                (e["type"], e["reason"]) for e in events if e["involvedObject"]["name"] == "east"
            ]

        # Down first (endpoints kept for the grace), then withdrawn: both recorded as Events.
        await eventually(lambda: ("Warning", "Unreachable") in east_events())
        assert "127.0.1.1" in hosts()
        await eventually(lambda: "127.0.1.1" not in hosts())  # withdrawn after the grace
        assert "127.0.2.1" in hosts()  # the other cluster carries on
        await eventually(lambda: ("Warning", "Withdrawn") in east_events())
        assert (
            next(c for c in one.status_document()["clusters"] if c["name"] == "east")["state"]
            == "withdrawn"
        )
        await east.start()
        await eventually(lambda: "127.0.1.1" in hosts())
        await eventually(
            lambda: condition_is(hub, MEMBER_CLUSTER_KIND, None, "east", "Ready", "True/Ready")
        )


async def test_fleetgate_status_reads_the_status_api(
    fleet: Fleet, controllers: list[KubeController]
) -> None:
    one = controllers[0]
    app = web.Application()
    one.add_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        async with running(one.run()):

            def synced() -> bool:
                clusters = one.status_document()["clusters"]
                up = all(c["state"] == "up" and c["services"] for c in clusters)
                return one.elector.is_leader and len(clusters) == 2 and up

            await eventually(synced)
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://{host}:{port}/v1/status") as response,
            ):
                assert response.status == 200
                document = await response.json()
            out = io.StringIO()
            status_cmd.render(document, out)
            text = out.getvalue()
            assert "controller one (leader)" in text
            assert "shop/web:80 1/2" in text, text
            assert "TrafficPolicy shop/store" in text
            assert status_cmd.healthy(document)
            await fleet.members[1].stop()
            await eventually(
                lambda: any(c["state"] == "down" for c in one.status_document()["clusters"])
            )
            assert not status_cmd.healthy(one.status_document())
    finally:
        await runner.cleanup()
