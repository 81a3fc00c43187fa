"""Leader election on a Lease in the simulated hub: one leader, takeover, release, conflicts."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime

import pytest

from controller.kube import ClusterClient
from controller.kube_leases import LeaseRecord
from controller.leader import Action, LeaderElector, LeaderSettings, next_action
from tests.conftest import eventually
from tests.controller.conftest import Connect, StartSimulator
from tests.controller.test_watching import running
from tests.fakes.kube_api import KubeApiSimulator
from tests.fakes.kube_store import kind_of

LEASES = kind_of("coordination.k8s.io/v1", "Lease")
FAST = LeaderSettings(
    identity="one",
    namespace="fleetgate",
    name="leader",
    lease_duration_s=0.6,
    renew_deadline_s=0.4,
    retry_period_s=0.05,
)

# For tests that count leadership changes but are not about expiry: FAST's 0.4 s renew deadline
# can pass on a loaded machine (a renewal is a read and a write), and the leader then steps down
# and leads again. Renewals still come every retry period.
ROOMY = {"lease_duration_s": 6.0, "renew_deadline_s": 4.0}


class Tally:
    """Who leads, seen through the callbacks: never more than one at a time."""

    def __init__(self) -> None:
        self.leaders: set[str] = set()
        self.most_at_once = 0
        self.started: list[str] = []
        self.stopped: list[str] = []

    def elector(self, client: ClusterClient, **changes: object) -> LeaderElector:
        settings = dataclasses.replace(FAST, **changes)  # type: ignore[arg-type]
        name = settings.identity
        return LeaderElector(
            client,
            settings,
            on_started_leading=lambda: self._start(name),
            on_stopped_leading=lambda: self._stop(name),
        )

    def _start(self, name: str) -> None:
        self.leaders.add(name)
        self.started.append(name)
        self.most_at_once = max(self.most_at_once, len(self.leaders))

    def _stop(self, name: str) -> None:
        self.leaders.discard(name)
        self.stopped.append(name)


def lease(sim: KubeApiSimulator) -> dict[str, object]:
    spec: dict[str, object] = sim.store.get(LEASES, "fleetgate", "leader")["spec"]
    return spec


def record(holder: str, rv: str = "7") -> LeaseRecord:
    return LeaseRecord("ns", "l", holder, 15.0, None, None, 0, rv)


@pytest.mark.parametrize(
    ("lease_record", "unchanged_since", "expected"),
    [
        pytest.param(None, 0.0, Action.CREATE, id="no-lease"),
        pytest.param(record("me"), 0.0, Action.RENEW, id="ours"),
        pytest.param(record(""), 99.0, Action.TAKE_OVER, id="released"),
        pytest.param(record("other"), 95.0, Action.WAIT, id="fresh"),
        pytest.param(record("other"), 90.0, Action.TAKE_OVER, id="expired"),
    ],
)
def test_next_action(
    lease_record: LeaseRecord | None, unchanged_since: float, expected: Action
) -> None:
    action = next_action(
        lease_record,
        identity="me",
        unchanged_since=unchanged_since,
        now=100.0,
        lease_duration_s=10.0,
    )
    assert action is expected


def test_settings_must_let_the_leader_step_down_before_a_takeover() -> None:
    with pytest.raises(ValueError, match="renew_deadline_s < lease_duration_s"):
        dataclasses.replace(FAST, renew_deadline_s=1.0)


async def test_two_electors_one_leader(start_simulator: StartSimulator, connect: Connect) -> None:
    hub = await start_simulator("hub")
    hub.latency_s = 0.05  # both first reads are in flight together: both try to create
    tally = Tally()
    one = tally.elector(await connect(hub), **ROOMY)
    two = tally.elector(await connect(hub), identity="two", **ROOMY)
    async with running(one.run(), two.run()):
        await eventually(lambda: len(tally.leaders) == 1)
        leader = next(iter(tally.leaders))
        first_rv = int(hub.store.get(LEASES, "fleetgate", "leader")["metadata"]["resourceVersion"])
        await eventually(lambda: hub.store.rv >= first_rv + 5)  # five renewals later...
        assert tally.leaders == {leader}  # ...still the same one
        assert {one.holder, two.holder} == {leader}
    assert [r.method for r in hub.requests if r.method == "POST"] == ["POST", "POST"]
    assert tally.most_at_once == 1
    assert tally.started == [leader]


async def test_the_standby_takes_over_when_the_leader_stops_renewing(
    start_simulator: StartSimulator, connect: Connect
) -> None:
    hub = await start_simulator("hub")
    tally = Tally()
    one = tally.elector(await connect(hub), release_on_stop=False)
    two = tally.elector(await connect(hub), identity="two")
    async with running(one.run()):
        await eventually(lambda: one.is_leader)
    # "one" is gone without a word: the Lease still names it until it expires.
    assert lease(hub)["holderIdentity"] == "one"
    async with running(two.run()):
        await eventually(lambda: two.is_leader)
        assert lease(hub)["holderIdentity"] == "two"
        assert lease(hub)["leaseTransitions"] == 1
    assert tally.started == ["one", "two"]
    assert tally.most_at_once == 1


async def test_a_graceful_stop_hands_the_lease_over_at_once(
    start_simulator: StartSimulator, connect: Connect
) -> None:
    hub = await start_simulator("hub")
    tally = Tally()
    slow = {"lease_duration_s": 60.0, "renew_deadline_s": 40.0}  # expiry would outlast the test
    one = tally.elector(await connect(hub), **slow)
    two = tally.elector(await connect(hub), identity="two", **slow)
    async with asyncio.TaskGroup() as group:
        leading = group.create_task(one.run())
        await eventually(lambda: one.is_leader)
        standby = group.create_task(two.run())
        await eventually(lambda: two.holder == "one")
        leading.cancel()
        await eventually(lambda: two.is_leader)  # long before the 60 s lease could expire
        standby.cancel()
    holders = [c.obj["spec"]["holderIdentity"] for c in hub.store.changes_since(0)]
    assert holders[holders.index("two") - 1] == ""  # "one" released it on the way out
    assert tally.started == ["one", "two"]


async def test_a_conflict_on_renewal_is_handled(
    start_simulator: StartSimulator, connect: Connect
) -> None:
    hub = await start_simulator("hub")
    tally = Tally()
    one = tally.elector(await connect(hub), **ROOMY)
    async with running(one.run()):
        await eventually(lambda: one.is_leader)
        puts_before = sum(r.method == "PUT" for r in hub.requests)
        hub.fail_next(409, count=2, match=lambda r: r.method == "PUT")
        await eventually(lambda: sum(r.method == "PUT" for r in hub.requests) >= puts_before + 4)
        assert one.is_leader
    assert tally.stopped == ["one"]  # only when the test stopped it


async def test_a_leader_whose_lease_is_taken_steps_down(
    start_simulator: StartSimulator, connect: Connect
) -> None:
    hub = await start_simulator("hub")
    tally = Tally()
    one = tally.elector(await connect(hub), lease_duration_s=60.0, renew_deadline_s=40.0)
    async with running(one.run()):
        await eventually(lambda: one.is_leader)
        now = datetime.datetime.now(datetime.UTC).isoformat()
        taken = {**lease(hub), "holderIdentity": "intruder", "renewTime": now}
        hub.store.upsert(
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": "leader", "namespace": "fleetgate"},
                "spec": taken,
            }
        )
        await eventually(lambda: not one.is_leader)
        assert one.holder == "intruder"
    assert tally.stopped == ["one"]


async def test_a_leader_cut_off_from_the_hub_steps_down(
    start_simulator: StartSimulator, connect: Connect
) -> None:
    hub = await start_simulator("hub")
    tally = Tally()
    one = tally.elector(await connect(hub))
    async with running(one.run()):
        await eventually(lambda: one.is_leader)
        await hub.stop()
        await eventually(lambda: not one.is_leader)
        await hub.start()
        await eventually(lambda: one.is_leader)
    assert tally.started == ["one", "one"]
