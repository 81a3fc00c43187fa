"""Releases in Kubernetes mode: two controller replicas on a simulated hub, each serving the
snapshot API and the operator API on loopback, with a polling gateway on each. The state lives in
the Release's status and the policy-history ConfigMap; the standby serves the leader's table; a
new leader resumes where the old one left off."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from controller import api_tokens, kube_config, kubestate, objects
from controller.hubsource import HubSettings
from controller.kubemode import KubeController, KubeModeSettings
from controller.reconcile import ReconcileSettings
from controller.releases import ReleaseSettings
from tests.conftest import eventually, sampled
from tests.controller.conftest import FAST_KUBE, FAST_WATCH, StartSimulator
from tests.controller.release_rig import PollingGateway, canary_weight
from tests.fakes.kube_api import KubeApiSimulator, RequestRecord
from tests.fakes.kube_config import write_kubeconfig
from tests.fakes.kube_store import kind_of

FLEETGATE = "fleetgate.io/v1alpha1"
RELEASE_KIND = kind_of(FLEETGATE, "Release")
POLICY_KIND = kind_of(FLEETGATE, "TrafficPolicy")
CONFIG_MAP_KIND = kind_of("v1", "ConfigMap")
LEASE_KIND = kind_of("coordination.k8s.io/v1", "Lease")
NAMESPACE = "fleetgate"  # the controllers' own (Lease, ConfigMap)
TOKENS = {"alice": ("admin", ()), "dev": ("developer", ("payments",))}
LOADED_S = 20.0  # polls that wait on a lease hand-over on a loaded machine


def member() -> dict[str, Any]:
    services = [
        {"namespace": "shop", "name": name, "ports": [{"port": 80, "endpoints": [address]}]}
        for name, address in (("web", "127.0.1.1:8080"), ("web-v2", "127.0.1.1:8081"))
    ]
    return {
        "apiVersion": FLEETGATE,
        "kind": "MemberCluster",
        "metadata": {"name": "east"},
        "spec": {"services": services},
    }


def storefront(hostnames: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": FLEETGATE,
        "kind": "TrafficPolicy",
        "metadata": {"name": "storefront", "namespace": "shop"},
        "spec": {"hostnames": hostnames, "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]},
    }


def release() -> dict[str, Any]:
    return {
        "apiVersion": FLEETGATE,
        "kind": "Release",
        "metadata": {"name": "web-v2", "namespace": "shop"},
        "spec": {
            "target": "storefront",
            "stable": {"backendRef": {"name": "web", "port": 80}},
            "canary": {"backendRef": {"name": "web-v2", "port": 80}},
            "strategy": {
                "canary": {
                    "steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]
                }
            },
        },
    }


def settings(identity: str, hub_kubeconfig: Path) -> KubeModeSettings:
    return KubeModeSettings(
        identity=identity,
        lease_namespace=NAMESPACE,
        hub_kubeconfig=hub_kubeconfig,
        member_kubeconfigs="file",
        # Long enough not to change hands on a loaded machine; the tests hand it over by stopping
        # the leader, which releases the Lease at once.
        lease_duration_s=15.0,
        renew_deadline_s=10.0,
        retry_period_s=0.1,
        connect_retry_s=0.05,
        status_interval_s=0.01,
        follow_interval_s=0.05,
        kube=FAST_KUBE,
        hub=HubSettings(watch=FAST_WATCH, debounce_s=0.01),
        reconcile=ReconcileSettings(debounce_s=0.01, max_delay_s=0.1),
        releases=ReleaseSettings(tick_interval_s=0.02),
    )


@dataclasses.dataclass
class Replica:
    controller: KubeController
    url: str  # snapshot API and operator API
    gateway: PollingGateway  # a gateway polling this replica
    task: asyncio.Task[None] | None = None

    @property
    def leading(self) -> bool:
        return self.controller.elector.is_leader

    def served_weight(self) -> int | None:
        latest = self.controller.publisher.latest
        return canary_weight(latest.table, "shop.example") if latest else None


@dataclasses.dataclass
class Rig:
    hub: KubeApiSimulator
    replicas: list[Replica]
    session: aiohttp.ClientSession
    tokens: dict[str, str]
    group: asyncio.TaskGroup

    async def leader(self) -> tuple[Replica, Replica]:
        """(leader, standby) once one of the running replicas leads."""
        running = [r for r in self.replicas if r.task is not None and not r.task.done()]
        await eventually(lambda: any(r.leading for r in running), timeout_s=LOADED_S)
        lead = next(r for r in running if r.leading)

        def loaded() -> bool:
            runner = lead.controller.runner
            return runner is not None and runner.ready

        await eventually(loaded, timeout_s=LOADED_S)
        return lead, next(r for r in self.replicas if r is not lead)

    async def call(
        self, replica: Replica, method: str, path: str, *, token: str = "alice", **params: Any
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {self.tokens[token]}"}
        async with self.session.request(
            method, replica.url + path, headers=headers, json=params or None
        ) as response:
            return response.status, await response.json()

    def stop(self, replica: Replica) -> None:
        assert replica.task is not None
        replica.task.cancel()

    def start(self, replica: Replica) -> None:
        replica.task = self.group.create_task(replica.controller.run(), name="controller")

    def release_status(self) -> dict[str, Any]:
        status = self.hub.store.get(RELEASE_KIND, "shop", "web-v2").get("status")
        return dict(status or {})


@contextlib.asynccontextmanager
async def rig(start_simulator: StartSimulator, tmp_path: Path) -> AsyncIterator[Rig]:
    hub = await start_simulator("hub")
    for obj in (member(), storefront(["shop.example"]), release()):
        hub.store.upsert(obj)
    hub_kubeconfig = write_kubeconfig(tmp_path / "hub.kubeconfig", [hub])
    tokens = {name: api_tokens.new_token() for name in TOKENS}
    table = api_tokens.Tokens(
        api_tokens.TokenEntry(name, api_tokens.hash_token(tokens[name]), role, namespaces)
        for name, (role, namespaces) in TOKENS.items()
    )
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        replicas = []
        for identity in ("one", "two"):
            client = await kube_config.connect("hub", hub_kubeconfig, settings=FAST_KUBE)
            stack.push_async_callback(client.close)
            controller = KubeController(settings(identity, hub_kubeconfig), client)
            app = web.Application()
            controller.add_routes(app)
            controller.add_api_routes(app, table)
            runner = web.AppRunner(app, shutdown_timeout=0.1)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            host, port = runner.addresses[0][:2]
            url = f"http://{host}:{port}"
            replicas.append(Replica(controller, url, PollingGateway(url, f"gw-{identity}")))
        # Entered last, left first: the controllers stop while their clients are still open.
        group = await stack.enter_async_context(asyncio.TaskGroup())
        the_rig = Rig(hub, replicas, session, tokens, group)
        tasks = [group.create_task(r.gateway.run(session), name="gateway") for r in replicas]
        for replica in replicas:
            the_rig.start(replica)
        try:
            yield the_rig
        finally:
            for replica in replicas:
                replica.controller.publisher.close()
                if replica.task is not None:
                    replica.task.cancel()
            for task in tasks:
                task.cancel()


async def test_state_in_status_a_standby_serves_it_and_a_new_leader_resumes(
    start_simulator: StartSimulator, tmp_path: Path
) -> None:
    async with rig(start_simulator, tmp_path) as fleet:
        leader, standby = await fleet.leader()
        status, body = await fleet.call(leader, "POST", "/api/v1/releases/shop/web-v2/start")
        assert status == 200, body
        await eventually(
            lambda: fleet.release_status().get("release", {}).get("phase") == "Paused",
            timeout_s=LOADED_S,
        )

        # The record sits next to the leader's conditions: neither writer undoes the other.
        def both_in_status() -> bool:
            current = fleet.release_status()
            return bool(current.get("conditions")) and "release" in current

        await eventually(both_in_status, timeout_s=LOADED_S)
        section = fleet.release_status()["release"]
        assert (section["step"], section["canaryWeight"]) == (1, 20), section
        record = json.loads(section["record"])
        assert record["state"]["canary_weight"] == 20

        # The standby serves the leader's table, overlay included, to its own gateway.
        await eventually(lambda: leader.gateway.applied > 0 and standby.gateway.applied > 0)
        await eventually(lambda: standby.gateway.weight() == 20, timeout_s=LOADED_S)

        def same_content() -> bool:
            mine, theirs = leader.controller.publisher.latest, standby.controller.publisher.latest
            return mine is not None and theirs is not None and mine.checksum == theirs.checksum

        await eventually(same_content, timeout_s=LOADED_S)

        # The leader goes away mid-release; every weight served meanwhile stays 20.
        def resumed() -> bool:
            runner = standby.controller.runner
            return runner is not None and runner.ready

        async with sampled(lambda: {standby.gateway.weight(), standby.served_weight()}) as seen:
            fleet.stop(leader)
            await eventually(lambda: standby.leading, timeout_s=LOADED_S)
            await eventually(resumed, timeout_s=LOADED_S)
            runner = standby.controller.runner
            assert runner is not None
            state = runner.state("shop/web-v2")
            assert state is not None
            assert (state.step_index, state.canary_weight, state.phase.value) == (1, 20, "Paused")
            await eventually(lambda: runner.ticks > 5)
        assert seen == {20}, seen

        # The new leader carries on from there.
        status, body = await fleet.call(standby, "POST", "/api/v1/releases/shop/web-v2/promote")
        assert status == 200, body
        await eventually(lambda: standby.gateway.weight() == 50, timeout_s=LOADED_S)
        await eventually(
            lambda: fleet.release_status()["release"]["canaryWeight"] == 50, timeout_s=LOADED_S
        )


async def test_a_leader_that_loses_the_lease_follows_and_the_new_one_resumes(
    start_simulator: StartSimulator, tmp_path: Path
) -> None:
    async with rig(start_simulator, tmp_path) as fleet:
        old, new = await fleet.leader()
        status, body = await fleet.call(old, "POST", "/api/v1/releases/shop/web-v2/start")
        assert status == 200, body
        await eventually(
            lambda: all(r.gateway.table and r.gateway.weight() == 20 for r in fleet.replicas),
            timeout_s=LOADED_S,
        )

        def resumed() -> bool:
            runner = new.controller.runner
            return runner is not None and runner.ready

        async with sampled(lambda: (r.gateway.weight() for r in fleet.replicas)) as seen:
            # The Lease changes hands under the leader (as after a renewal it missed): it reads
            # another holder, steps down and follows; the other replica finds itself the holder.
            lease = fleet.hub.store.get(LEASE_KIND, NAMESPACE, "fleetgate-controller")
            stolen = {
                **lease,
                "spec": {**lease["spec"], "holderIdentity": new.controller.settings.identity},
            }
            fleet.hub.store.upsert(stolen)
            await eventually(lambda: new.leading and not old.leading, timeout_s=LOADED_S)
            await eventually(resumed, timeout_s=LOADED_S)
            runner = new.controller.runner
            await eventually(lambda: old.controller.runner is None)  # its runner was cancelled
            assert runner is not None
            state = runner.state("shop/web-v2")
            assert state is not None
            assert (state.step_index, state.canary_weight) == (1, 20)
            await eventually(lambda: runner.ticks > 5)
        assert seen == {20}, seen

        status, body = await fleet.call(new, "POST", "/api/v1/releases/shop/web-v2/promote")
        assert status == 200, body
        # The old leader, now a standby, follows the new leader's record.
        await eventually(
            lambda: all(r.gateway.weight() == 50 for r in fleet.replicas), timeout_s=LOADED_S
        )


async def test_a_leader_stepping_down_does_not_serve_its_watch_s_older_record(
    start_simulator: StartSimulator, tmp_path: Path
) -> None:
    async with rig(start_simulator, tmp_path) as fleet:
        old, new = await fleet.leader()
        status, body = await fleet.call(old, "POST", "/api/v1/releases/shop/web-v2/start")
        assert status == 200, body
        await eventually(
            lambda: old.gateway.table is not None and old.gateway.weight() == 20, timeout_s=LOADED_S
        )
        # Every watch goes silent: the replicas' caches keep the record at 20 % from now on.

        def cached(replica: Replica) -> tuple[str, int] | None:
            doc = replica.controller.source.current(objects.RELEASES, "shop", "web-v2")
            record = kubestate.record_of(doc.obj) if doc is not None else None
            return (record["state"]["phase"], record["state"]["canary_weight"]) if record else None

        paused = ("Paused", 20)  # at the pause step: promote goes on to setWeight 50
        await eventually(
            lambda: all(cached(r) == paused for r in fleet.replicas), timeout_s=LOADED_S
        )
        fleet.hub.freeze_watches()
        status, body = await fleet.call(old, "POST", "/api/v1/releases/shop/web-v2/promote")
        assert status == 200, body
        await eventually(lambda: old.served_weight() == 50, timeout_s=LOADED_S)
        async with sampled(lambda: (old.served_weight(),)) as seen:
            lease = fleet.hub.store.get(LEASE_KIND, NAMESPACE, "fleetgate-controller")
            holder = new.controller.settings.identity
            fleet.hub.store.upsert({**lease, "spec": {**lease["spec"], "holderIdentity": holder}})
            await eventually(lambda: new.leading and not old.leading, timeout_s=LOADED_S)
            await eventually(lambda: old.controller.runner is None)
            # The new leader read the record with a LIST: 50 %. The old one, now following,
            # waits for its watch to show the record it wrote rather than serve the stale 20 %.
            await eventually(lambda: new.served_weight() == 50, timeout_s=LOADED_S)
            rounds = old.controller.releases.follow_rounds
            await eventually(lambda: old.controller.releases.follow_rounds >= rounds + 5)
            assert cached(old) == paused  # its watch still shows the old record
        assert seen == {50}, seen


async def test_a_release_dropped_from_the_policies_has_its_record_cleared(
    start_simulator: StartSimulator, tmp_path: Path
) -> None:
    async with rig(start_simulator, tmp_path) as fleet:
        leader, _ = await fleet.leader()
        status, body = await fleet.call(leader, "POST", "/api/v1/releases/shop/web-v2/start")
        assert status == 200, body
        await eventually(lambda: "record" in fleet.release_status().get("release", {}))
        # Its route is deleted: the Release no longer loads and leaves the policies, while its
        # object (and status) stays. A later leader must not bring it back from the old record.
        fleet.hub.store.delete(POLICY_KIND, "shop", "storefront")
        await eventually(lambda: "release" not in fleet.release_status(), timeout_s=LOADED_S)
        assert fleet.release_status().get("conditions")  # the other writer's keys are kept


async def test_an_action_whose_state_cannot_be_saved_publishes_nothing_until_it_is(
    start_simulator: StartSimulator, tmp_path: Path
) -> None:
    async with rig(start_simulator, tmp_path) as fleet:
        leader, _ = await fleet.leader()
        status, body = await fleet.call(leader, "POST", "/api/v1/releases/shop/web-v2/start")
        assert status == 200, body
        await eventually(
            lambda: fleet.release_status().get("release", {}).get("phase") == "Paused",
            timeout_s=LOADED_S,
        )
        await eventually(lambda: leader.gateway.weight() == 20, timeout_s=LOADED_S)

        def release_status_patch(request: RequestRecord) -> bool:
            return request.method == "PATCH" and request.path.endswith("/releases/web-v2/status")

        fleet.hub.fail_next(500, count=3, match=release_status_patch)
        status, body = await fleet.call(leader, "POST", "/api/v1/releases/shop/web-v2/promote")
        assert (status, body["error"]) == (503, "state_not_saved"), body
        assert leader.controller.publisher.latest is not None
        assert leader.served_weight() == 20  # saved first, published after: nothing moved
        # The runner saves again on its next ticks; once the API server takes it, it is served.
        await eventually(lambda: leader.gateway.weight() == 50, timeout_s=LOADED_S)
        assert fleet.release_status()["release"]["canaryWeight"] == 50


async def test_operator_api_leader_only_and_namespaced(
    start_simulator: StartSimulator, tmp_path: Path
) -> None:
    async with rig(start_simulator, tmp_path) as fleet:
        leader, standby = await fleet.leader()
        identity = leader.controller.settings.identity
        await eventually(lambda: standby.controller.elector.holder == identity, timeout_s=LOADED_S)
        status, body = await fleet.call(standby, "POST", "/api/v1/releases/shop/web-v2/start")
        assert status == 503, body
        assert body["error"] == "not_leader"
        assert body["leader"] == leader.controller.settings.identity
        assert leader.controller.settings.identity in body["message"]
        status, body = await fleet.call(standby, "GET", "/api/v1/releases")
        assert (status, body["error"]) == (503, "not_leader")

        status, body = await fleet.call(
            leader, "POST", "/api/v1/releases/shop/web-v2/start", token="dev"
        )
        assert (status, body["error"]) == (403, "forbidden")
        status, body = await fleet.call(leader, "GET", "/api/v1/releases", token="dev")
        assert (status, body["releases"]) == (200, [])
        status, body = await fleet.call(leader, "GET", "/api/v1/releases/shop/web-v2")
        assert (status, body["started"]) == (200, False)
        status, body = await fleet.call(leader, "GET", "/api/v1/gateways")
        assert status == 200
        assert [g["id"] for g in body["gateways"]] == [leader.gateway.id]


async def test_a_policy_rollback_is_kept_in_a_config_map_and_served_by_the_standby(
    start_simulator: StartSimulator, tmp_path: Path
) -> None:
    async with rig(start_simulator, tmp_path) as fleet:
        leader, standby = await fleet.leader()

        def hosts(replica: Replica) -> set[str]:
            table = replica.gateway.table
            return (
                set()
                if table is None
                else {h for h in ("shop.example", "new.example") if table.lookup(h)}
            )

        async def revisions(count: int) -> bool:
            status, body = await fleet.call(
                leader, "GET", "/api/v1/policies/shop/storefront/history"
            )
            return status == 200 and len(body["revisions"]) == count

        # The leader has recorded the policy as first written before it changes.
        await eventually(lambda: revisions(1), timeout_s=LOADED_S)
        fleet.hub.store.upsert(storefront(["shop.example", "new.example"]))
        await eventually(
            lambda: hosts(standby) == {"shop.example", "new.example"}, timeout_s=LOADED_S
        )
        await eventually(lambda: revisions(2), timeout_s=LOADED_S)
        status, body = await fleet.call(
            leader, "POST", "/api/v1/policies/shop/storefront/rollback", revision=1
        )
        assert status == 200, body
        config_map = fleet.hub.store.get(CONFIG_MAP_KIND, NAMESPACE, kubestate.CONFIG_MAP)
        saved = json.loads(config_map["data"][kubestate.POLICIES_KEY])
        assert saved["shop/storefront"]["override_base"] is not None
        # The standby learns the rollback from the ConfigMap watch and serves it too.
        await eventually(lambda: hosts(standby) == {"shop.example"}, timeout_s=LOADED_S)
        await eventually(lambda: hosts(leader) == {"shop.example"}, timeout_s=LOADED_S)


@pytest.mark.parametrize("damaged", ["not json", json.dumps({"format": 99})])
def test_a_damaged_record_is_reported_not_read_as_empty(damaged: str) -> None:
    from controller import objects
    from controller.statefile import StateFileError

    obj = objects.parse_object(
        {
            "apiVersion": FLEETGATE,
            "kind": "Release",
            "metadata": {"name": "web-v2", "namespace": "shop", "uid": "u", "generation": 1},
            "status": {"release": {"record": damaged}},
        }
    )
    with pytest.raises(StateFileError, match="Release shop/web-v2"):
        kubestate.record_of(obj)
