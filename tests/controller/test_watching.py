"""controller.watching on the simulator: list+watch, 410 → relist, bookmarks, stalls, backoff."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest

from controller import objects
from controller.objects import EventType
from controller.watching import Changed, Listed, Update, Watcher, WatchSettings, backoff_s
from tests.conftest import eventually
from tests.controller.conftest import FAST_WATCH, Connect, StartSimulator
from tests.controller.kube_objects import service
from tests.fakes.kube_api import KubeApiSimulator
from tests.fakes.kube_store import kind_of


class Mirror:
    """A sink that keeps `name → resourceVersion` and every update it was handed."""

    def __init__(self) -> None:
        self.state: dict[str, str] = {}
        self.updates: list[Update] = []

    def __call__(self, update: Update) -> None:
        self.updates.append(update)
        if isinstance(update, Listed):
            self.state = {o.meta.name: o.meta.resource_version for o in update.objects}
        elif update.event.type is EventType.DELETED:
            assert update.event.obj is not None
            self.state.pop(update.event.obj.meta.name, None)
        elif update.event.obj is not None:
            self.state[update.event.obj.meta.name] = update.event.obj.meta.resource_version

    def changes(self) -> list[tuple[str, str]]:
        return [
            (u.event.type.value, u.event.resource_version)
            for u in self.updates
            if isinstance(u, Changed)
        ]


def truth(sim: KubeApiSimulator) -> dict[str, str]:
    items, _ = sim.store.list_objects(kind_of("v1", "Service"))
    return {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in items}


@contextlib.asynccontextmanager
async def running(*loops: Coroutine[Any, Any, Any]) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(loop) for loop in loops]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()


async def start_watcher(
    start_simulator: StartSimulator,
    connect: Connect,
    settings: WatchSettings = FAST_WATCH,
    **sim_options: Any,
) -> tuple[KubeApiSimulator, Watcher, Mirror]:
    sim = await start_simulator("a", **sim_options)
    sim.store.upsert(service("web"))
    sim.store.upsert(service("api"))
    mirror = Mirror()
    watcher = Watcher(await connect(sim), objects.SERVICES, mirror, settings)
    return sim, watcher, mirror


async def test_list_then_watch_follows_added_modified_deleted(
    start_simulator: StartSimulator, connect: Connect
) -> None:
    sim, watcher, mirror = await start_watcher(start_simulator, connect)
    async with running(watcher.run()):
        await eventually(lambda: mirror.state == truth(sim) and sim.watch_count == 1)
        sim.store.upsert(service("shop"))
        sim.store.upsert(service("web", ports=[("http", 81)]))
        sim.store.delete(kind_of("v1", "Service"), "shop", "api")
        await eventually(lambda: mirror.state == truth(sim))
    assert mirror.changes() == [("ADDED", "3"), ("MODIFIED", "4"), ("DELETED", "5")]
    assert watcher.stats.lists == 1


async def test_expired_history_relists_without_loss_or_duplicates(
    start_simulator: StartSimulator, connect: Connect
) -> None:
    sim, watcher, mirror = await start_watcher(start_simulator, connect)
    async with running(watcher.run()):
        await eventually(lambda: sim.watch_count == 1)
        # While the watch is away: changes, then the history behind them is compacted. Nothing
        # awaits in between, so the watcher can only come back to a 410.
        sim.drop_watches()
        sim.store.upsert(service("web", ports=[("http", 81)]))
        sim.store.delete(kind_of("v1", "Service"), "shop", "api")
        sim.store.upsert(service("shop"))
        sim.compact()
        await eventually(lambda: watcher.stats.expired == 1 and sim.watch_count == 1)
        sim.store.upsert(service("late"))
        await eventually(lambda: mirror.state == truth(sim))
    assert watcher.stats.lists == 2
    assert mirror.changes() == [("ADDED", str(sim.store.rv))]  # the rest came with the relist
    assert len(set(mirror.changes())) == len(mirror.changes())


async def test_a_410_error_event_mid_stream_relists(
    start_simulator: StartSimulator, connect: Connect
) -> None:
    sim, watcher, mirror = await start_watcher(start_simulator, connect)
    gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    async with running(watcher.run()):
        await eventually(lambda: sim.watch_count == 1)
        sim.inject(kind_of("v1", "Service"), {"type": "ERROR", "object": gone})
        await eventually(lambda: watcher.stats.lists == 2 and sim.watch_count == 1)
        sim.store.upsert(service("after"))
        await eventually(lambda: mirror.state == truth(sim))
    assert watcher.stats.expired == 1


async def test_bookmarks_advance_the_resource_version(
    start_simulator: StartSimulator, connect: Connect
) -> None:
    sim, watcher, mirror = await start_watcher(start_simulator, connect, bookmark_interval_s=0.02)
    async with running(watcher.run()):
        await eventually(lambda: sim.watch_count == 1)
        listed_at = watcher.resource_version
        sim.store.upsert({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "other"}})
        await eventually(lambda: watcher.resource_version == str(sim.store.rv))
        assert watcher.resource_version != listed_at
        sim.drop_watches()
        await eventually(lambda: len([r for r in sim.requests if r.is_watch]) == 2)
    resumed = [r for r in sim.requests if r.is_watch][-1]
    assert resumed.query["resourceVersion"] == str(sim.store.rv)
    assert resumed.query["allowWatchBookmarks"] == "True"
    assert watcher.stats.bookmarks >= 1
    assert mirror.changes() == []  # bookmarks never reach the sink


async def test_a_stalled_watch_is_restarted(
    start_simulator: StartSimulator, connect: Connect
) -> None:
    settings = dataclasses.replace(FAST_WATCH, stall_s=0.3)
    sim, watcher, mirror = await start_watcher(start_simulator, connect, settings)
    async with running(watcher.run()):
        await eventually(lambda: sim.watch_count == 1)
        sim.freeze_watches()  # a half-open connection: the server side says nothing any more
        sim.store.upsert(service("while-frozen"))
        await eventually(lambda: "while-frozen" in mirror.state)
    assert watcher.stats.stalls >= 1
    assert watcher.stats.lists == 1  # resumed from its resourceVersion, no relist needed


@pytest.mark.parametrize("status", [429, 500, 503, 403])
async def test_errors_back_off_then_recover(
    start_simulator: StartSimulator, connect: Connect, status: int
) -> None:
    sim, watcher, mirror = await start_watcher(start_simulator, connect)
    sim.fail_next(status, count=3)
    async with running(watcher.run()):
        await eventually(lambda: mirror.state == truth(sim))
    assert watcher.stats.failures == 3
    assert str(status) in (watcher.stats.last_error or "")


async def test_a_reset_watch_resumes_from_its_resource_version(
    start_simulator: StartSimulator, connect: Connect
) -> None:
    sim, watcher, mirror = await start_watcher(start_simulator, connect)
    async with running(watcher.run()):
        await eventually(lambda: sim.watch_count == 1)
        sim.drop_watches(abort=True)
        sim.store.upsert(service("after-reset"))
        await eventually(lambda: mirror.state == truth(sim))
    assert watcher.stats.lists == 1
    assert mirror.changes() == [("ADDED", str(sim.store.rv))]


async def test_a_cluster_outage_is_survived(
    start_simulator: StartSimulator, connect: Connect
) -> None:
    sim, watcher, mirror = await start_watcher(start_simulator, connect)
    async with running(watcher.run()):
        await eventually(lambda: sim.watch_count == 1)
        await sim.stop()
        sim.store.upsert(service("during-outage"))
        await eventually(lambda: watcher.stats.failures >= 2)
        await sim.start()
        await eventually(lambda: mirror.state == truth(sim))
    assert "unreachable" in (watcher.stats.last_error or "")


@pytest.mark.parametrize(
    ("attempt", "roll", "expected"),
    [
        pytest.param(1, 0.0, 0.25, id="first-low"),
        pytest.param(1, 1.0, 0.5, id="first-high"),
        pytest.param(3, 0.5, 1.5, id="doubles"),
        pytest.param(50, 1.0, 30.0, id="capped"),
    ],
)
def test_backoff_is_exponential_jittered_and_capped(
    attempt: int, roll: float, expected: float
) -> None:
    assert backoff_s(attempt, base_s=0.5, max_s=30.0, roll=roll) == pytest.approx(expected)
