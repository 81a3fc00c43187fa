"""Several simulated member clusters at once: one inventory, outages, slow clusters, 410s."""

from __future__ import annotations

import dataclasses
from typing import Any

from controller import inventory, objects
from controller.health import HealthSettings
from controller.kube import ClusterClient
from controller.members import Members, MemberSettings
from policies.model import ServiceRef
from policies.table import Inventory
from tests.conftest import eventually
from tests.controller.conftest import FAST_KUBE, FAST_WATCH, Connect, StartSimulator
from tests.controller.kube_objects import endpoint, endpoint_slice, service
from tests.controller.test_watching import running
from tests.fakes.kube_api import KubeApiSimulator
from tests.fakes.kube_store import kind_of

WEB = ServiceRef("shop", "web", 80)
SETTINGS = MemberSettings(
    watch=FAST_WATCH,
    health=HealthSettings(interval_s=0.02, failure_threshold=2, success_threshold=1, grace_s=0.3),
)


def populate(sim: KubeApiSimulator, *addresses: str) -> None:
    sim.store.upsert(service("web"))
    sim.store.upsert(
        endpoint_slice("web-1", service_name="web", endpoints=[endpoint(a) for a in addresses])
    )


def truth(*sims: KubeApiSimulator) -> Inventory:
    """The inventory a fresh LIST of every simulator would give."""
    observed = inventory.Observed()
    for sim in sims:
        for resource, (api_version, kind) in [
            (objects.SERVICES, ("v1", "Service")),
            (objects.ENDPOINT_SLICES, ("discovery.k8s.io/v1", "EndpointSlice")),
        ]:
            items, _ = sim.store.list_objects(kind_of(api_version, kind))
            parsed = [objects.parse_object(item) for item in items]
            observed = inventory.replace_all(observed, sim.name, resource, parsed)
    return inventory.to_inventory(observed)


def hosts(members: Members, cluster: str) -> list[str]:
    return [e.host for e in members.inventory().endpoints.get((cluster, WEB), ())]


async def start_fleet(
    start_simulator: StartSimulator, connect: Connect, names: str = "abc", **options: Any
) -> tuple[list[KubeApiSimulator], list[ClusterClient]]:
    sims = []
    for index, name in enumerate(names, start=1):
        sim = await start_simulator(name, **options)
        populate(sim, f"127.0.{index}.1")
        sims.append(sim)
    clients = [await connect(sim) for sim in sims]
    return sims, clients


async def test_every_cluster_feeds_one_inventory(
    start_simulator: StartSimulator, connect: Connect
) -> None:
    sims, clients = await start_fleet(start_simulator, connect)
    changes = []
    members = Members(SETTINGS, on_change=lambda: changes.append(1))
    async with running(*(members.watch_cluster(c) for c in clients)):
        await eventually(lambda: members.inventory() == truth(*sims))
        assert hosts(members, "b") == ["127.0.2.1"]
        populate(sims[1], "127.0.2.1", "127.0.2.2")
        await eventually(lambda: hosts(members, "b") == ["127.0.2.1", "127.0.2.2"])
        assert members.inventory() == truth(*sims)
        assert all(members.health(s.name) is not None for s in sims)
    assert changes
    assert members.inventory() == Inventory({})  # a cancelled cluster takes its state along


async def test_a_cluster_that_goes_away_is_down_then_withdrawn(
    start_simulator: StartSimulator, connect: Connect
) -> None:
    sims, clients = await start_fleet(start_simulator, connect)
    a, b, c = sims
    members = Members(SETTINGS)
    async with running(*(members.watch_cluster(client) for client in clients)):
        await eventually(lambda: members.inventory() == truth(*sims))
        await b.stop()

        def b_is_down() -> bool:
            health = members.health("b")
            return health is not None and not health.up

        await eventually(b_is_down)
        populate(a, "127.0.1.1", "127.0.1.2")  # the others keep updating meanwhile
        await eventually(lambda: hosts(members, "a") == ["127.0.1.1", "127.0.1.2"])
        await eventually(lambda: ("b", WEB) not in members.inventory().endpoints)
        assert members.withdrawn() == {"b"}
        assert hosts(members, "c") == ["127.0.3.1"]

        await b.start()
        await eventually(lambda: members.inventory() == truth(a, b, c))
        assert members.withdrawn() == frozenset()


async def test_a_hanging_cluster_does_not_delay_the_others(
    start_simulator: StartSimulator, connect: Connect
) -> None:
    sims, clients = await start_fleet(start_simulator, connect, names="ab")
    a, b = sims
    b.latency_s = 30.0  # every request to b hangs until the client gives up
    members = Members(SETTINGS)
    async with running(*(members.watch_cluster(client) for client in clients)):
        await eventually(lambda: hosts(members, "a") == ["127.0.1.1"])
        populate(a, "127.0.1.1", "127.0.1.9")
        await eventually(lambda: hosts(members, "a") == ["127.0.1.1", "127.0.1.9"])
        assert members.watchers("b")[objects.SERVICES].stats.lists == 0  # b is still hanging
        assert hosts(members, "b") == []


async def test_a_410_between_watches_loses_no_update(
    start_simulator: StartSimulator, connect: Connect
) -> None:
    sims, clients = await start_fleet(start_simulator, connect, names="ab")
    a, b = sims
    members = Members(SETTINGS)
    async with running(*(members.watch_cluster(client) for client in clients)):
        await eventually(lambda: members.inventory() == truth(a, b))
        await eventually(lambda: a.watch_count == 2)
        a.drop_watches()
        populate(a, "127.0.1.5")  # replaced while the watches were away...
        a.store.upsert(service("api"))
        a.store.upsert(
            endpoint_slice("api-1", service_name="web", endpoints=[endpoint("10.9.0.1")])
        )
        a.store.delete(kind_of("v1", "Service"), "shop", "api")
        a.compact()  # ...and the history of it is gone: 410, relist
        watchers = members.watchers("a").values()
        await eventually(lambda: sum(w.stats.lists for w in watchers) == 4)  # two relists
        await eventually(lambda: members.inventory() == truth(a, b))
        assert hosts(members, "a") == ["10.9.0.1", "127.0.1.5"]
        assert sum(w.stats.expired for w in watchers) == 2


async def test_settings_reach_the_probes(start_simulator: StartSimulator, connect: Connect) -> None:
    sim = await start_simulator("a")
    client = await connect(sim, settings=dataclasses.replace(FAST_KUBE, probe_timeout_s=0.05))
    sim.ready = False
    members = Members(SETTINGS)
    async with running(members.watch_cluster(client)):

        def reported_unready() -> bool:
            health = members.health("a")
            return health is not None and "readyz check failed" in health.detail

        await eventually(reported_unready)
