"""The gateway registry shared between Kubernetes-mode replicas: the publisher's side (remote
gateways counted by checksum in rollouts), the ConfigMap document, and two controller replicas on
a simulated hub where a gateway polls only the standby: the leader's release step is not applied
until that gateway has applied it."""

from __future__ import annotations

import asyncio
import datetime
import json
from pathlib import Path

from controller import gateway_registry as registry
from controller.publishing import Publisher, PublishSettings
from controller.remote_gateways import RemoteGateway
from gateway.subscriber import Subscriber, SubscriberSettings
from policies.table import RoutingTable
from tests.conftest import eventually
from tests.controller.conftest import Connect, StartSimulator
from tests.controller.release_rig import canary_weight
from tests.controller.test_kube_releases import (
    CONFIG_MAP_KIND,
    LOADED_S,
    NAMESPACE,
    Rig,
    rig,
)
from tests.controller.test_publishing import make_table
from tests.fakes.kube_store import ApiError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def remote(
    checksum: str | None, *, gateway: str = "gw-r", seen_ago_s: float = 0.0
) -> RemoteGateway:
    return RemoteGateway(gateway, "east", checksum, "two", seen_ago_s)


def test_a_remote_gateway_counts_by_the_content_it_serves() -> None:
    publisher = Publisher()
    first = publisher.publish(make_table(1, "a.example"))
    second = publisher.publish(make_table(2, "b.example"))
    publisher.record("gw-local", None, applied=2)

    publisher.feed_remote([remote(first.checksum)])
    rollout = publisher.rollout(2)
    assert (rollout.applied, rollout.pending) == (("gw-local",), ("gw-r",))

    publisher.feed_remote([remote(second.checksum)])
    assert publisher.rollout(2).done
    assert publisher.rollout(2).total == 2

    # Content the leader never published (or nothing yet) is not applied.
    publisher.feed_remote([remote("0" * 64), remote(None, gateway="gw-new")])
    assert publisher.rollout(2).pending == ("gw-new", "gw-r")

    # An abort publishes the old content again: a gateway still serving it has applied it.
    third = publisher.publish(make_table(3, "a.example"))
    assert third.checksum == first.checksum
    publisher.feed_remote([remote(first.checksum)])
    assert publisher.rollout(3).applied == ("gw-r",)
    assert publisher.rollout(3, ["gw-r"]).done


def test_remote_entries_age_out_and_the_fresher_sighting_counts() -> None:
    clock = Clock()
    publisher = Publisher(PublishSettings(stale_after_s=60.0), clock=clock)
    old = publisher.publish(make_table(1, "a.example"))
    new = publisher.publish(make_table(2, "b.example"))

    publisher.feed_remote([remote(new.checksum, seen_ago_s=30.0)])
    assert publisher.rollout(2).applied == ("gw-r",)
    clock.now += 31.0  # its replica went away: nothing refreshes the entry
    assert publisher.rollout(2).total == 0

    # Reported by two replicas (it moved): the later sighting counts.
    publisher.feed_remote(
        [remote(old.checksum, seen_ago_s=20.0), remote(new.checksum, seen_ago_s=1.0)]
    )
    assert publisher.rollout(2).applied == ("gw-r",)

    # Seen here after the other replica last saw it: our own record counts ...
    publisher.record("gw-r", None, applied=1)
    assert publisher.rollout(2).pending == ("gw-r",)
    # ... and the other replica's once it is the fresher one again.
    clock.now += 5.0
    publisher.feed_remote([remote(new.checksum, seen_ago_s=0.0)])
    assert publisher.rollout(2).applied == ("gw-r",)


def test_shared_entries_name_content_by_checksum() -> None:
    clock = Clock()
    publisher = Publisher(PublishSettings(stale_after_s=60.0), clock=clock)
    first = publisher.publish(make_table(1, "a.example"))
    second = publisher.publish(make_table(2, "b.example"))
    publisher.record("gw-a", "east", applied=1)  # a gateway that sends no checksum
    publisher.record("gw-b", None, applied=7, checksum=second.checksum)  # from another replica
    publisher.begin_poll("gw-c", None, 2, checksum=second.checksum)
    clock.now += 2.0
    entries = {e.id: e for e in publisher.shared_entries("one")}
    assert entries["gw-a"] == RemoteGateway("gw-a", "east", first.checksum, "one", 2.0)
    assert entries["gw-b"].checksum == second.checksum
    assert entries["gw-c"].seen_ago_s == 0.0  # polling right now
    clock.now += 61.0
    assert [e.id for e in publisher.shared_entries("one")] == ["gw-c"]


def test_the_config_map_document_round_trips() -> None:
    now = datetime.datetime(2026, 12, 3, 18, 0, tzinfo=datetime.UTC)
    entries = [remote("ab" * 32, seen_ago_s=1.5), remote(None, gateway="gw-new")]
    text = registry.encode("two", entries, now)
    assert json.loads(text)["written"] == "2026-12-03T18:00:00.000+00:00"
    later = now + datetime.timedelta(seconds=2)
    decoded = registry.decode(text, later)
    assert decoded == (
        remote("ab" * 32, seen_ago_s=3.5),
        remote(None, gateway="gw-new", seen_ago_s=2.0),
    )
    assert registry.config_map_name("Pod_7") == "fleetgate-gateways-pod-7"
    assert registry.config_map_name("controller-0") == "fleetgate-gateways-controller-0"


async def test_rounds_write_when_changed_and_the_leader_reads_the_others(
    start_simulator: StartSimulator, connect: Connect
) -> None:
    hub = await start_simulator("hub")
    client = await connect(hub)
    moments = [datetime.datetime(2026, 12, 3, 18, 0, tzinfo=datetime.UTC)]

    def clock() -> datetime.datetime:
        return moments[-1]

    def later(seconds: float) -> None:
        moments.append(moments[-1] + datetime.timedelta(seconds=seconds))

    leading_publisher, standby_publisher = Publisher(), Publisher()
    leading_publisher.publish(make_table(1))
    standby_publisher.publish(make_table(5))  # the same content, by the standby's clock
    standby_publisher.record("gw-s", "east", applied=5)  # a gateway that sends no checksum
    one = registry.SharedRegistry(
        client,
        leading_publisher,
        identity="one",
        namespace=NAMESPACE,
        leading=lambda: True,
        clock=clock,
    )
    two = registry.SharedRegistry(
        client,
        standby_publisher,
        identity="two",
        namespace=NAMESPACE,
        leading=lambda: False,
        clock=clock,
    )

    await two.round()
    await two.round()
    assert two.writes == 1  # unchanged: not written again ...
    later(registry.RegistrySettings().heartbeat_s)
    await two.round()
    assert two.writes == 2  # ... until the heartbeat is due
    # A damaged registry of some other replica is skipped.
    hub.store.upsert(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "fleetgate-gateways-x",
                "namespace": NAMESPACE,
                "labels": registry.LABELS,
            },
            "data": {registry.KEY: "{"},
        }
    )

    await one.round()
    assert one.reads == 1
    assert leading_publisher.rollout(1).applied == ("gw-s",)

    # A failed list keeps what was read: the gateway still counts (and still holds others back).
    hub.fail_next(
        500, match=lambda request: request.method == "GET" and "configmaps" in request.path
    )
    await one.round()
    assert one.reads == 1
    assert leading_publisher.rollout(1).applied == ("gw-s",)

    # The standby went away: its entries age out.
    later(PublishSettings().stale_after_s + 1.0)
    await one.round()
    assert one.reads == 2
    assert leading_publisher.rollout(1).total == 0
    assert standby_publisher.rollout(5).applied == ("gw-s",)  # a standby counts only its own


async def test_a_step_waits_for_the_gateway_polling_only_the_standby(
    start_simulator: StartSimulator, tmp_path: Path
) -> None:
    async with rig(start_simulator, tmp_path) as fleet:
        leader, standby = await fleet.leader()
        lead = leader.controller
        mine, theirs = leader.gateway.id, standby.gateway.id
        both = (mine, theirs)
        # Both gateways serve the first table; the standby shares its one in the hub, and the
        # leader has read that since.
        await eventually(lambda: leader.gateway.applied > 0 and standby.gateway.applied > 0)
        identity = standby.controller.settings.identity

        def standby_shared() -> bool:
            latest = standby.controller.publisher.latest
            return latest is not None and shared_by(fleet, identity) == {theirs: latest.checksum}

        await eventually(standby_shared, timeout_s=LOADED_S)
        reads = lead.gateway_registry.reads
        await eventually(lambda: lead.gateway_registry.reads > reads + 1, timeout_s=LOADED_S)

        # The standby's gateway receives the step's table but does not apply it yet.
        standby.gateway.gate.clear()
        status, body = await fleet.call(leader, "POST", "/api/v1/releases/shop/web-v2/start")
        assert status == 200, body
        await eventually(lambda: leader.gateway.weight() == 20, timeout_s=LOADED_S)
        await eventually(lambda: standby.served_weight() == 20, timeout_s=LOADED_S)
        await eventually(
            lambda: standby.gateway.received > standby.gateway.applied, timeout_s=LOADED_S
        )
        # Several rounds of the leader reading the shared registry and of the runner later ...
        runner = lead.runner
        assert runner is not None
        reads, ticks = lead.gateway_registry.reads, runner.ticks
        await eventually(
            lambda: lead.gateway_registry.reads > reads + 1 and runner.ticks > ticks + 5,
            timeout_s=LOADED_S,
        )
        # ... the step is still not applied: the standby's gateway serves the old table.
        state = runner.state("shop/web-v2")
        assert state is not None
        assert (state.step_index, state.step_applied_at) == (0, None), state
        carried = lead.publisher.latest
        assert carried is not None
        rollout = lead.publisher.rollout(carried.version)
        assert (rollout.applied, rollout.pending) == ((mine,), (theirs,)), rollout
        assert shared_by(fleet, identity)[theirs] != carried.checksum

        # Once it applies the table, the step is applied and the release pauses at step 1.
        standby.gateway.gate.set()

        def paused() -> bool:
            current = runner.state("shop/web-v2")
            return current is not None and current.phase.value == "Paused"

        await eventually(paused, timeout_s=LOADED_S)
        state = runner.state("shop/web-v2")
        assert state is not None
        assert (state.step_index, state.canary_weight) == (1, 20)
        assert lead.publisher.rollout(carried.version).applied == tuple(sorted(both))

        # An abort takes the whole fleet back: its table (the content before the release,
        # published again) is not applied while the standby's gateway still serves 20 %.
        standby.gateway.gate.clear()
        status, body = await fleet.call(leader, "POST", "/api/v1/releases/shop/web-v2/abort")
        assert status == 200, body
        await eventually(lambda: leader.gateway.weight() == 0, timeout_s=LOADED_S)
        await eventually(lambda: standby.served_weight() == 0, timeout_s=LOADED_S)
        aborted = lead.publisher.latest
        assert aborted is not None
        reads = lead.gateway_registry.reads
        await eventually(lambda: lead.gateway_registry.reads > reads + 1, timeout_s=LOADED_S)
        assert lead.publisher.rollout(aborted.version).pending == (theirs,)
        assert standby.gateway.weight() == 20
        standby.gateway.gate.set()
        await eventually(lambda: lead.publisher.rollout(aborted.version).done, timeout_s=LOADED_S)
        assert standby.gateway.weight() == 0


def test_a_new_leader_counts_no_step_before_reading_the_other_replicas() -> None:
    publisher = Publisher()
    publisher.publish(make_table(1))
    publisher.record("gw-local", None, applied=1)
    publisher.forget_remote()
    rollout = publisher.rollout(1)
    assert not rollout.done
    assert str(rollout) == "1/1 gateways on v1 (other replicas' not read yet)"
    publisher.feed_remote([])
    assert publisher.rollout(1).done


class Holder:
    """The gateway's table holder, reduced to what the subscriber needs."""

    def __init__(self) -> None:
        self.table: RoutingTable | None = None

    def apply(self, table: RoutingTable) -> None:
        self.table = table


def shared_by(fleet: Rig, replica: str) -> dict[str, str | None]:
    """Gateway id -> checksum, as `replica` shares them in the hub."""
    try:
        found = fleet.hub.store.get(CONFIG_MAP_KIND, NAMESPACE, registry.config_map_name(replica))
    except ApiError:  # not written yet
        return {}
    gateways = json.loads(found["data"]["gateways.json"])["gateways"]
    return {g["id"]: g["checksum"] for g in gateways}


async def test_a_real_gateway_on_the_standby_is_counted_by_the_checksum_it_reports(
    start_simulator: StartSimulator, tmp_path: Path
) -> None:
    async with rig(start_simulator, tmp_path) as fleet:
        leader, standby = await fleet.leader()
        lead, identity = leader.controller, standby.controller.settings.identity
        runner = lead.runner
        assert runner is not None

        def subscribe() -> tuple[Holder, asyncio.Task[None]]:
            config = SubscriberSettings(
                controller_url=standby.url, gateway_id="gw-real", wait_s=1.0, backoff_max_s=0.05
            )
            holder = Holder()
            task = fleet.group.create_task(Subscriber(config, holder).run(), name="subscriber")
            return holder, task

        holder, task = subscribe()

        def shared_current() -> bool:
            latest = standby.controller.publisher.latest
            return (
                holder.table is not None
                and latest is not None
                and shared_by(fleet, identity).get("gw-real") == latest.checksum
            )

        await eventually(shared_current, timeout_s=LOADED_S)
        reads = lead.gateway_registry.reads
        await eventually(lambda: lead.gateway_registry.reads > reads + 1, timeout_s=LOADED_S)
        # It stops polling (still live for the registry's window) with the first table.
        task.cancel()
        old = holder.table
        assert old is not None

        status, body = await fleet.call(leader, "POST", "/api/v1/releases/shop/web-v2/start")
        assert status == 200, body
        await eventually(lambda: standby.gateway.weight() == 20, timeout_s=LOADED_S)
        reads, ticks = lead.gateway_registry.reads, runner.ticks
        await eventually(
            lambda: lead.gateway_registry.reads > reads + 1 and runner.ticks > ticks + 5,
            timeout_s=LOADED_S,
        )
        state = runner.state("shop/web-v2")
        assert state is not None
        assert (state.step_index, state.step_applied_at) == (0, None), state
        carried = lead.publisher.latest
        assert carried is not None
        assert lead.publisher.rollout(carried.version).pending == ("gw-real",)
        assert shared_by(fleet, identity)["gw-real"] == old.checksum != carried.checksum

        # It comes back and applies the step's table: the step is applied.
        holder, task = subscribe()

        def paused() -> bool:
            current = runner.state("shop/web-v2")
            return current is not None and current.phase.value == "Paused"

        await eventually(paused, timeout_s=LOADED_S)
        assert holder.table is not None
        assert canary_weight(holder.table, "shop.example") == 20
        assert "gw-real" in lead.publisher.rollout(carried.version).applied
        task.cancel()
