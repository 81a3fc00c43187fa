"""The leader lists the other replicas' gateways with its own (`Publisher.gateways`: `/v1/gateways`,
`/v1/status`, the release status, `fleetgate status`), each with the replica it polls, the
version its content maps to and how far behind that is, as the rollouts count it. The two-replica
test runs the controllers on a simulated hub with a gateway polling only the standby."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from controller import statusapi
from controller.publishing import Publisher, PublishSettings
from controller.remote_gateways import RemoteGateway
from fleetgate import release_view, status_cmd
from tests.conftest import eventually
from tests.controller.conftest import StartSimulator
from tests.controller.test_gateway_registry import Clock, shared_by
from tests.controller.test_kube_releases import LOADED_S, Replica, Rig, rig
from tests.controller.test_publishing import make_table


def remote(
    gateway: str, checksum: str | None, *, replica: str = "two", seen_ago_s: float = 0.0
) -> RemoteGateway:
    return RemoteGateway(gateway, "east", checksum, replica, seen_ago_s)


def test_the_leader_lists_the_other_replicas_gateways_as_its_rollouts_count_them() -> None:
    clock = Clock()
    publisher = Publisher(PublishSettings(stale_after_s=60.0), clock=clock)
    first = publisher.publish(make_table(1, "a.example"))
    clock.now += 10.0
    second = publisher.publish(make_table(2, "b.example"))
    publisher.begin_poll("gw-mine", "west", 2, checksum=second.checksum)
    publisher.feed_remote(
        [
            remote("gw-current", second.checksum),
            remote("gw-old", first.checksum, seen_ago_s=4.0),
            remote("gw-unknown", "0" * 64, replica="three"),
        ]
    )
    clock.now += 1.0
    views = {view.id: view for view in publisher.gateways()}
    assert sorted(views) == ["gw-current", "gw-mine", "gw-old", "gw-unknown"]
    mine, current, old, unknown = (
        views[k] for k in ("gw-mine", "gw-current", "gw-old", "gw-unknown")
    )
    assert (mine.replica, mine.applied, mine.behind, mine.checksum) == (
        None,
        2,
        0,
        second.checksum,
    )
    assert (current.replica, current.applied, current.behind, current.lag_s) == ("two", 2, 0, 0.0)
    assert (current.polling, current.live, current.local) == (True, True, False)
    # On the first table: one version behind, since the second was published (1 s ago).
    assert (old.applied, old.behind, old.lag_s, old.last_seen_s) == (1, 1, 1.0, 5.0)
    assert not old.polling
    # Content this leader never published: no version, every remembered one missing.
    assert (unknown.replica, unknown.applied, unknown.behind, unknown.checksum) == (
        "three",
        0,
        2,
        "0" * 64,
    )
    rollout = publisher.rollout(2)
    assert set(rollout.pending) == {v.id for v in views.values() if v.behind}

    # A gateway seen here after the other replica last saw it is listed once, as ours.
    publisher.record("gw-old", None, applied=2, checksum=second.checksum)
    (listed,) = [view for view in publisher.gateways() if view.id == "gw-old"]
    assert (listed.replica, listed.behind) == (None, 0)

    # Entries that aged out are no longer listed (nor counted); a standby feeds nothing.
    clock.now += 61.0
    assert [view.id for view in publisher.gateways()] == ["gw-mine", "gw-old"]
    publisher.feed_remote(())
    assert all(view.replica is None for view in publisher.gateways())


def test_fleetgate_status_shows_the_replica_column_only_when_an_entry_has_one() -> None:
    publisher = Publisher()
    first = publisher.publish(make_table(1, "a.example"))
    publisher.publish(make_table(2, "b.example"))
    publisher.begin_poll("gw-mine", None, 2)
    document = {"controller": {"id": "one", "leader": True}, "snapshot": {"version": 2}}

    def rendered() -> list[str]:
        doc = {**document, "gateways": statusapi.gateways_section(publisher)}
        out = io.StringIO()
        status_cmd.render(json.loads(json.dumps(doc)), out)
        return out.getvalue().splitlines()

    assert "GATEWAY  ZONE  APPLIED  BEHIND  LAG" in rendered()
    publisher.feed_remote([remote("gw-a", first.checksum), remote("gw-b", "9f" * 32)])
    lines = rendered()
    header = next(line for line in lines if line.startswith("GATEWAY"))
    assert header.split() == ["GATEWAY", "ZONE", "REPLICA", "APPLIED", "BEHIND", "LAG"]
    rows = {line.split()[0]: line.split() for line in lines if line.startswith("gw-")}
    assert rows["gw-mine"][:5] == ["gw-mine", "-", "(this", "one)", "2"]
    assert rows["gw-a"][:5] == ["gw-a", "east", "two", "1", "1"]
    assert rows["gw-b"][:5] == ["gw-b", "east", "two", "sha:9f9f9f9f9f9f", "2"]


async def test_the_leader_lists_a_gateway_polling_only_the_standby_and_whether_it_is_behind(
    start_simulator: StartSimulator, tmp_path: Path
) -> None:
    async with rig(start_simulator, tmp_path) as fleet:
        leader, standby = await fleet.leader()
        lead, identity = leader.controller, standby.controller.settings.identity
        mine, theirs = leader.gateway.id, standby.gateway.id

        async def listed(replica: Replica) -> dict[str, dict[str, Any]]:
            _, gateways = await fleet.call(replica, "GET", "/v1/gateways")
            return {g["id"]: g for g in gateways["gateways"]}

        async def in_status(replica: Replica) -> dict[str, dict[str, Any]]:
            _, document = await fleet.call(replica, "GET", "/v1/status")
            return {g["id"]: g for g in document["gateways"]}

        def shared_current() -> bool:
            latest = standby.controller.publisher.latest
            return latest is not None and shared_by(fleet, identity).get(theirs) == latest.checksum

        await eventually(shared_current, timeout_s=LOADED_S)
        reads = lead.gateway_registry.reads
        await eventually(lambda: lead.gateway_registry.reads > reads + 1, timeout_s=LOADED_S)
        for listing in (await listed(leader), await in_status(leader)):
            assert set(listing) == {mine, theirs}
            assert (listing[mine]["replica"], listing[theirs]["replica"]) == (None, identity)
            assert (listing[theirs]["behind"], listing[theirs]["live"]) == (0, True)
        # The standby reads no one else's: it lists only its own.
        assert set(await listed(standby)) == {theirs}
        assert (await in_status(standby))[theirs]["replica"] is None

        # The standby's gateway receives the step's table but does not apply it yet.
        standby.gateway.gate.clear()
        status, body = await fleet.call(leader, "POST", "/api/v1/releases/shop/web-v2/start")
        assert status == 200, body
        await eventually(lambda: standby.served_weight() == 20, timeout_s=LOADED_S)
        await eventually(
            lambda: standby.gateway.received > standby.gateway.applied, timeout_s=LOADED_S
        )
        reads = lead.gateway_registry.reads
        await eventually(lambda: lead.gateway_registry.reads > reads + 1, timeout_s=LOADED_S)
        carried = lead.publisher.latest
        assert carried is not None
        behind = (await in_status(leader))[theirs]
        assert behind["replica"] == identity, behind
        assert behind["behind"] >= 1, behind
        assert behind["applied"] < carried.version
        assert behind["checksum"] != carried.checksum
        assert (await listed(leader))[theirs]["behind"] >= 1
        assert not status_cmd.healthy({"gateways": list((await in_status(leader)).values())})
        release = await release_gateways(fleet, leader)
        assert release[theirs]["replica"] == identity
        assert release[mine]["replica"] is None

        # Once it applies the table, the leader lists it as current.
        standby.gateway.gate.set()

        async def caught_up() -> bool:
            entry = (await in_status(leader)).get(theirs)
            return entry is not None and entry["behind"] == 0

        await eventually(caught_up, timeout_s=LOADED_S, interval_s=0.05)
        entry = (await listed(leader))[theirs]
        assert (entry["replica"], entry["applied"]) == (identity, carried.version)
        _, view = await fleet.call(leader, "GET", "/api/v1/releases/shop/web-v2")
        text = release_view.status(view)
        assert f"(via {identity})" in text


async def release_gateways(fleet: Rig, replica: Replica) -> dict[str, Mapping[str, Any]]:
    status, view = await fleet.call(replica, "GET", "/api/v1/releases/shop/web-v2")
    assert status == 200, view
    return {g["id"]: g for g in view["gateways"]}
