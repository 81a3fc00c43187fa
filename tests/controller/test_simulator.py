"""The Kubernetes API simulator is faithful where the controller depends on it: driven here by the
raw kubernetes_asyncio client (CoreV1Api, DiscoveryV1Api, CustomObjectsApi, CoordinationV1Api,
Watch), not by our wrapper, so that a wrapper bug cannot hide a simulator bug."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.conftest import eventually
from tests.controller.conftest import StartSimulator
from tests.controller.kube_objects import endpoint, endpoint_slice, service
from tests.fakes.kube_api import KubeApiSimulator
from tests.fakes.kube_config import kubeconfig
from tests.fakes.kube_store import kind_of

NS = "shop"


@pytest.fixture
async def sim(start_simulator: StartSimulator) -> KubeApiSimulator:
    return await start_simulator("hub", bookmark_interval_s=0.05)


@pytest.fixture
async def api(sim: KubeApiSimulator) -> AsyncIterator[Any]:
    api_client = await config.new_client_from_config_dict(kubeconfig([sim]))
    async with api_client:
        yield api_client


async def collect(stream: Any, *, until: int) -> list[dict[str, Any]]:
    """Events from a kubernetes_asyncio Watch until `until` have arrived or the stream ends."""
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(5):
        async for event in stream:
            events.append(event)
            if len(events) >= until:
                break
    return events


async def test_crud_status_codes_and_resource_versions(api: Any, sim: KubeApiSimulator) -> None:
    core: Any = client.CoreV1Api(api)
    created = await core.create_namespaced_service(NS, service("web"))
    assert created.metadata.resource_version == "1"
    assert created.metadata.uid
    assert created.metadata.creation_timestamp is not None
    with pytest.raises(ApiException) as exists:
        await core.create_namespaced_service(NS, service("web"))
    assert exists.value.status == 409
    assert json.loads(exists.value.body or b"{}")["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as missing:
        await core.read_namespaced_service("nope", NS)
    assert missing.value.status == 404

    body = service("web", ports=[("http", 81)])
    body["metadata"]["resourceVersion"] = "1"
    replaced = await core.replace_namespaced_service("web", NS, body)
    assert replaced.metadata.resource_version == "2"
    with pytest.raises(ApiException) as stale:
        await core.replace_namespaced_service("web", NS, body)  # still says "1"
    assert stale.value.status == 409
    assert json.loads(stale.value.body or b"{}")["reason"] == "Conflict"

    await core.delete_namespaced_service("web", NS)
    assert sim.store.rv == 3  # the deletion has its own resourceVersion
    assert (await core.list_namespaced_service(NS)).items == []


async def test_merge_and_json_patch_and_generation(api: Any) -> None:
    custom: Any = client.CustomObjectsApi(api)
    policy = {
        "apiVersion": "fleetgate.io/v1alpha1",
        "kind": "TrafficPolicy",
        "metadata": {"name": "web", "labels": {"team": "a"}},
        "spec": {"hostnames": ["shop.example"]},
    }
    args = ("fleetgate.io", "v1alpha1", NS, "trafficpolicies", "web")
    created = await custom.create_namespaced_custom_object(*args[:4], policy)
    assert created["metadata"]["generation"] == 1

    merge = "application/merge-patch+json"  # the client would pick json-patch for a dict here
    labelled = await custom.patch_namespaced_custom_object(
        *args, {"metadata": {"labels": {"team": "b"}}}, _content_type=merge
    )
    assert labelled["metadata"]["labels"] == {"team": "b"}
    assert labelled["metadata"]["generation"] == 1  # metadata is not spec

    patched = await custom.patch_namespaced_custom_object(
        *args, [{"op": "add", "path": "/spec/hostnames/-", "value": "www.shop.example"}]
    )
    assert patched["spec"]["hostnames"] == ["shop.example", "www.shop.example"]
    assert patched["metadata"]["generation"] == 2

    status = await custom.patch_namespaced_custom_object_status(
        *args,
        {"status": {"conditions": [{"type": "Accepted", "status": "True"}]}},
        _content_type=merge,
    )
    assert status["status"]["conditions"][0]["type"] == "Accepted"
    assert status["metadata"]["generation"] == 2  # status is not spec either
    with pytest.raises(ApiException) as failed_test:
        await custom.patch_namespaced_custom_object(
            *args, [{"op": "test", "path": "/spec/hostnames/0", "value": "other"}]
        )
    assert failed_test.value.status == 422


async def test_list_selectors(api: Any, sim: KubeApiSimulator) -> None:
    for name, labels in [
        ("a", {"tier": "web", "env": "prod"}),
        ("b", {"tier": "api", "env": "prod"}),
        ("c", {"tier": "web"}),
    ]:
        body = service(name)
        body["metadata"]["labels"] = labels
        sim.store.upsert(body)
    core: Any = client.CoreV1Api(api)

    async def names(**selectors: str) -> list[str]:
        listed = await core.list_namespaced_service(NS, **selectors)
        return [item.metadata.name for item in listed.items]

    assert await names(label_selector="tier=web") == ["a", "c"]
    assert await names(label_selector="tier!=web") == ["b"]
    assert await names(label_selector="tier in (api, db)") == ["b"]
    assert await names(label_selector="tier notin (api)") == ["a", "c"]
    assert await names(label_selector="env") == ["a", "b"]
    assert await names(label_selector="!env") == ["c"]
    assert await names(label_selector="tier=web,env=prod") == ["a"]
    assert await names(field_selector="metadata.name=b") == ["b"]
    assert await names(field_selector="metadata.name!=b,metadata.namespace=shop") == ["a", "c"]
    with pytest.raises(ApiException) as bad:
        await names(field_selector="spec.type=ClusterIP")
    assert bad.value.status == 400

    raw = await core.list_namespaced_service(NS, _preload_content=False)
    async with raw:
        body = await raw.json()
    assert (body["kind"], body["apiVersion"]) == ("ServiceList", "v1")
    assert body["metadata"]["resourceVersion"] == str(sim.store.rv)


async def test_watch_from_scratch_replays_state_then_streams(
    api: Any, sim: KubeApiSimulator
) -> None:
    sim.store.upsert(service("old"))
    core: Any = client.CoreV1Api(api)
    async with watch.Watch() as stream:
        events = stream.stream(core.list_namespaced_service, NS, timeout_seconds=5)
        first = await collect(events, until=1)
        sim.store.upsert(service("new"))
        second = await collect(events, until=1)
    assert [(e["type"], e["object"].metadata.name) for e in first + second] == [
        ("ADDED", "old"),
        ("ADDED", "new"),
    ]
    watch_requests = [r for r in sim.requests if "watch" in r.query]
    assert watch_requests[0].query["watch"] == "True"  # what kubernetes_asyncio sends


async def test_watch_replays_from_a_resource_version_with_selector_transitions(
    api: Any, sim: KubeApiSimulator
) -> None:
    discovery: Any = client.DiscoveryV1Api(api)
    sim.store.upsert(endpoint_slice("web-1", service_name="web", endpoints=[endpoint("10.0.0.1")]))
    start = sim.store.rv
    moved = endpoint_slice("web-1", service_name="api", endpoints=[endpoint("10.0.0.1")])
    sim.store.upsert(moved)  # leaves the web selector: DELETED for that watch
    sim.store.upsert(endpoint_slice("web-2", service_name="web", endpoints=[]))
    async with watch.Watch() as stream:
        events = stream.stream(
            discovery.list_namespaced_endpoint_slice,
            NS,
            resource_version=str(start),
            label_selector="kubernetes.io/service-name=web",
            timeout_seconds=5,
        )
        got = await collect(events, until=2)
    assert [(e["type"], e["object"].metadata.name) for e in got] == [
        ("DELETED", "web-1"),
        ("ADDED", "web-2"),
    ]


async def test_compacted_history_is_410_expired(api: Any, sim: KubeApiSimulator) -> None:
    sim.store.upsert(service("web"))
    sim.store.upsert(service("api"))
    sim.compact()
    core: Any = client.CoreV1Api(api)
    async with watch.Watch() as stream:
        events = stream.stream(
            core.list_namespaced_service, NS, resource_version="1", timeout_seconds=5
        )
        with pytest.raises(ApiException) as expired:
            await collect(events, until=1)
    assert expired.value.status == 410
    assert "Expired" in str(expired.value.reason)


async def test_bookmarks_carry_the_current_resource_version(
    api: Any, sim: KubeApiSimulator
) -> None:
    sim.store.upsert(service("web"))
    start = sim.store.rv
    sim.store.upsert({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}})
    coordination: Any = client.CoordinationV1Api(api)
    async with watch.Watch() as stream:
        events = stream.stream(
            coordination.list_namespaced_lease,
            NS,
            resource_version=str(start),
            allow_watch_bookmarks=True,
            timeout_seconds=5,
        )
        got = await collect(events, until=1)
        assert got[0]["type"] == "BOOKMARK"
        assert stream.resource_version == str(sim.store.rv)


async def test_timeout_seconds_ends_the_stream(api: Any, sim: KubeApiSimulator) -> None:
    core: Any = client.CoreV1Api(api)
    async with watch.Watch() as stream:
        events = stream.stream(core.list_namespaced_service, NS, timeout_seconds=1)
        got = await collect(events, until=1)  # returns when the server closes the stream
    assert got == []


async def test_injected_event_reaches_live_watches(api: Any, sim: KubeApiSimulator) -> None:
    core: Any = client.CoreV1Api(api)
    kind = kind_of("v1", "Service")
    async with watch.Watch() as stream:
        events = stream.stream(core.list_namespaced_service, NS, timeout_seconds=5)

        async def inject_once_watching() -> None:
            await eventually(lambda: sim.watch_count > 0)
            sim.inject(kind, {"type": "ERROR", "object": _gone()})

        async with asyncio.TaskGroup() as group:
            group.create_task(inject_once_watching())
            with pytest.raises(ApiException) as expired:
                await collect(events, until=1)
    assert expired.value.status == 410


async def test_discovery_version_and_readyz(api: Any, sim: KubeApiSimulator) -> None:
    version = await client.VersionApi(api).get_code()
    assert version.major == "1"
    groups = await client.ApisApi(api).get_api_versions()
    assert {"discovery.k8s.io", "coordination.k8s.io", "fleetgate.io"} <= {
        g.name for g in groups.groups
    }
    resources = await client.CoordinationV1Api(api).get_api_resources()
    assert [r.name for r in resources.resources] == ["leases"]
    core = await client.CoreApi(api).get_api_versions()
    assert core.versions == ["v1"]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{sim.url}/readyz") as ready:
            assert (ready.status, await ready.text()) == (200, "ok")
        sim.ready = False
        async with session.get(f"{sim.url}/readyz") as unready:
            assert unready.status == 500


async def test_kubeconfig_contexts_reach_their_own_cluster(
    start_simulator: StartSimulator,
) -> None:
    a, b = await start_simulator("a"), await start_simulator("b")
    a.store.upsert(service("only-in-a"))
    b.store.upsert(service("only-in-b"))
    seen = {}
    for name in ("a", "b"):
        api_client = await config.new_client_from_config_dict(kubeconfig([a, b]), context=name)
        async with api_client:
            listed = await client.CoreV1Api(api_client).list_service_for_all_namespaces()
            seen[name] = [s.metadata.name for s in listed.items]
    assert seen == {"a": ["only-in-a"], "b": ["only-in-b"]}

    wrong = kubeconfig([a])
    wrong["users"][0]["user"]["token"] = "not-the-token"
    api_client = await config.new_client_from_config_dict(wrong)
    async with api_client:
        with pytest.raises(ApiException) as denied:
            await client.CoreV1Api(api_client).list_service_for_all_namespaces()
    assert denied.value.status == 401


async def test_fail_next_and_restart_on_the_same_port(api: Any, sim: KubeApiSimulator) -> None:
    core: Any = client.CoreV1Api(api)
    sim.fail_next(503, match=lambda r: r.method == "GET")
    with pytest.raises(ApiException) as failed:
        await core.list_namespaced_service(NS)
    assert failed.value.status == 503
    assert (await core.list_namespaced_service(NS)).items == []  # only the next one failed

    port = sim.port
    await sim.stop()
    with pytest.raises(aiohttp.ClientConnectorError):
        await core.list_namespaced_service(NS)
    await sim.start()
    assert sim.port == port
    assert (await core.list_namespaced_service(NS)).items == []


def _gone() -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": "Expired",
        "message": "too old resource version: 1 (5)",
        "code": 410,
    }
