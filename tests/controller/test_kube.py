"""controller.kube (with kube_config and kube_leases): typed answers and one translation of every
failure, against the simulator."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
from pathlib import Path

import pytest
import yaml

from controller import errors, kube_config, kube_leases, objects
from controller.objects import EventType
from tests.controller.conftest import FAST_KUBE, Connect, StartSimulator
from tests.controller.kube_objects import endpoint, endpoint_slice, service
from tests.fakes.kube_config import kubeconfig


async def test_list_returns_typed_objects_and_the_resource_version(
    start_simulator: StartSimulator, connect: Connect
) -> None:
    sim = await start_simulator("a")
    sim.store.upsert(service("web"))
    sim.store.upsert(endpoint_slice("web-1", service_name="web", endpoints=[endpoint("10.0.0.1")]))
    sim.store.upsert(
        {
            "apiVersion": "fleetgate.io/v1alpha1",
            "kind": "MemberCluster",
            "metadata": {"name": "eu-1", "labels": {"region": "eu"}},
            "spec": {"priority": 1},
        }
    )
    client = await connect(sim)

    services = await client.list_objects(objects.SERVICES)
    assert [o.meta.key for o in services.items] == [("shop", "web")]
    assert services.resource_version == str(sim.store.rv)
    slices = await client.list_objects(objects.ENDPOINT_SLICES, namespace="shop")
    assert slices.items[0].raw["endpoints"][0]["addresses"] == ["10.0.0.1"]
    members = await client.list_objects(objects.MEMBER_CLUSTERS, label_selector="region=eu")
    assert members.items[0].meta.namespace is None
    assert members.items[0].raw["spec"] == {"priority": 1}
    assert await client.list_objects(objects.TRAFFIC_POLICIES) == objects.ObjectList(
        str(sim.store.rv), ()
    )


async def test_watch_yields_typed_events_and_bookmarks(
    start_simulator: StartSimulator, connect: Connect
) -> None:
    sim = await start_simulator("a", bookmark_interval_s=0.05)
    client = await connect(sim)
    start = (await client.list_objects(objects.SERVICES)).resource_version
    sim.store.upsert(service("web"))
    seen = []
    stream = client.watch_objects(objects.SERVICES, resource_version=start, timeout_s=5)
    async with contextlib.aclosing(stream) as events:
        async for event in events:
            seen.append(event)
            if event.type is EventType.BOOKMARK:
                break
    assert [(e.type, e.obj.meta.name if e.obj else None) for e in seen] == [
        (EventType.ADDED, "web"),
        (EventType.BOOKMARK, None),
    ]
    assert seen[-1].resource_version == str(sim.store.rv)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(404, errors.NotFound, id="404-not-found"),
        pytest.param(409, errors.Conflict, id="409-conflict"),
        pytest.param(410, errors.Expired, id="410-expired"),
        pytest.param(429, errors.ApiError, id="429-retriable"),
        pytest.param(503, errors.ApiError, id="503-retriable"),
        pytest.param(403, errors.ApiError, id="403-not-retriable"),
    ],
)
async def test_error_statuses_are_translated_once(
    start_simulator: StartSimulator, connect: Connect, status: int, expected: type[Exception]
) -> None:
    sim = await start_simulator("a")
    client = await connect(sim)
    sim.fail_next(status)
    with pytest.raises(expected) as caught:
        await client.list_objects(objects.SERVICES)
    assert type(caught.value) is expected
    assert isinstance(caught.value, errors.ApiError)
    assert caught.value.status == status
    assert caught.value.cluster == "a"
    assert caught.value.retriable is (status in (429, 503))


async def test_watch_errors_are_translated(
    start_simulator: StartSimulator, connect: Connect
) -> None:
    sim = await start_simulator("a")
    client = await connect(sim)
    sim.store.upsert(service("web"))
    sim.store.upsert(service("api"))
    sim.compact()  # history after resourceVersion 1 is gone
    with pytest.raises(errors.Expired, match="too old resource version"):
        async with contextlib.aclosing(
            client.watch_objects(objects.SERVICES, resource_version="1", timeout_s=5)
        ) as events:
            await anext(events)
    sim.fail_next(500)
    with pytest.raises(errors.ApiError) as failed:
        async with contextlib.aclosing(
            client.watch_objects(objects.SERVICES, resource_version=str(sim.store.rv), timeout_s=5)
        ) as events:
            await anext(events)
    assert failed.value.status == 500


async def test_an_absent_cluster_is_unreachable(
    start_simulator: StartSimulator, connect: Connect
) -> None:
    sim = await start_simulator("a")
    client = await connect(sim)
    await sim.stop()
    with pytest.raises(errors.ClusterUnreachable, match="cluster 'a' is unreachable"):
        await client.list_objects(objects.SERVICES)
    with pytest.raises(errors.ClusterUnreachable):
        await client.probe_readyz()
    with pytest.raises(errors.ClusterUnreachable):
        await client.read_lease("kube-system", "x")


async def test_a_slow_answer_times_out_as_unreachable(
    start_simulator: StartSimulator, connect: Connect
) -> None:
    sim = await start_simulator("a")
    client = await connect(sim, settings=dataclasses.replace(FAST_KUBE, request_timeout_s=0.1))
    sim.latency_s = 1.0
    with pytest.raises(errors.ClusterUnreachable):
        await client.list_objects(objects.SERVICES)


async def test_readiness_probe(start_simulator: StartSimulator, connect: Connect) -> None:
    sim = await start_simulator("a")
    client = await connect(sim)
    await client.probe_readyz()
    sim.ready = False
    with pytest.raises(errors.ApiError, match="readyz check failed") as unready:
        await client.probe_readyz()
    assert unready.value.status == 500


async def test_lease_create_read_replace_with_conflicts(
    start_simulator: StartSimulator, connect: Connect
) -> None:
    sim = await start_simulator("hub")
    client = await connect(sim)
    with pytest.raises(errors.NotFound):
        await client.read_lease("fleetgate", "leader")
    now = datetime.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=datetime.UTC)
    record = kube_leases.LeaseRecord("fleetgate", "leader", "me", 15.0, now, now, 0)
    created = await client.create_lease(record)
    assert created.resource_version
    assert (created.holder, created.acquire_time, created.duration_s) == ("me", now, 15.0)
    with pytest.raises(errors.Conflict):
        await client.create_lease(record)

    later = now + datetime.timedelta(seconds=2)
    renewed = await client.replace_lease(dataclasses.replace(created, renew_time=later))
    assert renewed.renew_time == later
    assert await client.read_lease("fleetgate", "leader") == renewed
    with pytest.raises(errors.Conflict):  # `created` carries the old resourceVersion
        await client.replace_lease(dataclasses.replace(created, holder="thief"))


async def test_kubeconfig_sources(start_simulator: StartSimulator, tmp_path: Path) -> None:
    a, b = await start_simulator("a"), await start_simulator("b")
    b.store.upsert(service("in-b"))
    secret_data = {"kubeconfig": yaml.safe_dump(kubeconfig([a, b], current="b")).encode()}
    a.store.upsert(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "member-b", "namespace": "fleetgate"},
            "data": {k: base64.b64encode(v).decode() for k, v in secret_data.items()},
        }
    )
    async with await kube_config.connect("a", kubeconfig([a]), settings=FAST_KUBE) as hub:
        data = await hub.read_secret("fleetgate", "member-b")
    assert data == secret_data
    async with await kube_config.connect("b", kube_config.kubeconfig_from_secret(data)) as member:
        listed = await member.list_objects(objects.SERVICES)
    assert [o.meta.name for o in listed.items] == ["in-b"]

    with pytest.raises(errors.ConfigError, match="cluster 'c'"):
        await kube_config.connect("c", kubeconfig([a]), context="no-such-context")
    with pytest.raises(errors.ConfigError):
        await kube_config.connect("c", tmp_path / "missing-kubeconfig")
    with pytest.raises(errors.ConfigError):
        kube_config.kubeconfig_from_secret({"other": b""})
