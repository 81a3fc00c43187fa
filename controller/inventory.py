"""Observed Services and EndpointSlices per member cluster, and the endpoints they yield. Pure.

Every update returns a new `Observed`; nothing is mutated, so the reconciler can compile from a
value that no watcher changes underneath it. Endpoints are recomputed incrementally: an event
touches only the Service it concerns.

How an EndpointSlice becomes `policies.table.Endpoint`s (the rules kube-proxy applies):

* A slice belongs to the Service named by its `kubernetes.io/service-name` label, in its namespace.
  A Service port matches the slice port of the same *name* (both "" when unnamed) and protocol;
  the endpoint's port is the slice port's number (the resolved targetPort). Only TCP ports.
* `ready` (unset means true) → `Endpoint(ready=True)`.
* serving and terminating → `Endpoint(ready=False)`: a pod that is shutting down but still
  answers. Gateways use such endpoints only when nothing ready is left (panic), like kube-proxy's
  terminating-endpoints fallback, so connections drain instead of failing.
* neither ready nor (serving and terminating) → left out.
* Zone: the first `hints.forZones` entry when hints exist and do not include the endpoint's own
  zone (topology-aware routing wants it consumed there), else the endpoint's `zone`.
* An address that appears in several slices (a slice split or merge in flight) is listed once;
  ready wins over not ready.
* Only the first address of an endpoint is used (the API declares the others fungible).

A cluster contributes to the inventory only after both its Services and its EndpointSlices have
been listed once, so a half-synced cluster never publishes services without endpoints. A Service
with no ready endpoint is present with an empty tuple: the cluster has the service, nothing serves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping

from controller import objects
from controller.objects import EndpointSlice, EventType, KubeObject, Resource, Service, WatchEvent
from policies.model import ServiceRef
from policies.table import Endpoint, Inventory

ObjectKey = tuple[str, str]  # (namespace, name)
WATCHED: tuple[Resource, ...] = (objects.SERVICES, objects.ENDPOINT_SLICES)


@dataclasses.dataclass(frozen=True, slots=True)
class ClusterState:
    """What one member cluster has. `endpoints` is derived from the rest and kept in step."""

    services: Mapping[ObjectKey, Service] = dataclasses.field(default_factory=dict)
    slices: Mapping[ObjectKey, EndpointSlice] = dataclasses.field(default_factory=dict)
    slices_by_service: Mapping[ObjectKey, frozenset[str]] = dataclasses.field(default_factory=dict)
    endpoints: Mapping[ServiceRef, tuple[Endpoint, ...]] = dataclasses.field(default_factory=dict)
    listed: frozenset[Resource] = frozenset()  # resources listed at least once

    @property
    def synced(self) -> bool:
        return self.listed.issuperset(WATCHED)


@dataclasses.dataclass(frozen=True, slots=True)
class Observed:
    clusters: Mapping[str, ClusterState] = dataclasses.field(default_factory=dict)


def replace_all(
    observed: Observed, cluster: str, resource: Resource, items: Iterable[KubeObject]
) -> Observed:
    """A fresh LIST: whatever was known of `resource` in `cluster` is replaced by `items`."""
    state = observed.clusters.get(cluster, ClusterState())
    if resource == objects.SERVICES:
        services = {}
        for obj in items:
            service = objects.parse_service(obj)
            services[(service.namespace, service.name)] = service
        state = dataclasses.replace(state, services=services)
    elif resource == objects.ENDPOINT_SLICES:
        slices = {}
        for obj in items:
            piece = objects.parse_endpoint_slice(obj)
            slices[(piece.namespace, piece.name)] = piece
        state = dataclasses.replace(state, slices=slices, slices_by_service=_index(slices.values()))
    else:
        return observed
    state = dataclasses.replace(
        state,
        endpoints=_all_endpoints(cluster, state),
        listed=state.listed | {resource},
    )
    return _with(observed, cluster, state)


def apply_event(
    observed: Observed, cluster: str, resource: Resource, event: WatchEvent
) -> Observed:
    """One ADDED / MODIFIED / DELETED event. Idempotent: a replayed event changes nothing."""
    if event.obj is None or event.type is EventType.BOOKMARK:
        return observed
    state = observed.clusters.get(cluster, ClusterState())
    deleted = event.type is EventType.DELETED
    if resource == objects.SERVICES:
        service = objects.parse_service(event.obj)
        key = (service.namespace, service.name)
        services = dict(state.services)
        old = services.pop(key, None)
        if not deleted:
            services[key] = service
        state = dataclasses.replace(state, services=services)
        touched = {key}
        stale_refs = _refs(old)
    elif resource == objects.ENDPOINT_SLICES:
        piece = objects.parse_endpoint_slice(event.obj)
        key = (piece.namespace, piece.name)
        slices = dict(state.slices)
        old_slice = slices.pop(key, None)
        if not deleted:
            slices[key] = piece
        index = dict(state.slices_by_service)
        touched = set()
        if old_slice is not None and old_slice.service:
            owner = (old_slice.namespace, old_slice.service)
            remaining = index.get(owner, frozenset()) - {old_slice.name}
            if remaining:
                index[owner] = remaining
            else:
                index.pop(owner, None)
            touched.add(owner)
        if not deleted and piece.service:
            owner = (piece.namespace, piece.service)
            index[owner] = index.get(owner, frozenset()) | {piece.name}
            touched.add(owner)
        state = dataclasses.replace(state, slices=slices, slices_by_service=index)
        stale_refs = set()
    else:
        return observed
    endpoints = dict(state.endpoints)
    for owner in touched:
        for ref in stale_refs | _refs(state.services.get(owner)):
            endpoints.pop(ref, None)
        endpoints.update(_service_endpoints(cluster, state, owner))
    return _with(observed, cluster, dataclasses.replace(state, endpoints=endpoints))


def remove_cluster(observed: Observed, cluster: str) -> Observed:
    if cluster not in observed.clusters:
        return observed
    return Observed({name: s for name, s in observed.clusters.items() if name != cluster})


def to_inventory(observed: Observed, *, withdrawn: Collection[str] = ()) -> Inventory:
    """Endpoints of every synced cluster except the `withdrawn` ones (down past their grace)."""
    merged: dict[tuple[str, ServiceRef], tuple[Endpoint, ...]] = {}
    for cluster, state in sorted(observed.clusters.items()):
        if cluster in withdrawn or not state.synced:
            continue
        for ref, endpoints in state.endpoints.items():
            merged[(cluster, ref)] = endpoints
    return Inventory(merged)


def _with(observed: Observed, cluster: str, state: ClusterState) -> Observed:
    clusters = dict(observed.clusters)
    clusters[cluster] = state
    return Observed(clusters)


def _index(slices: Iterable[EndpointSlice]) -> dict[ObjectKey, frozenset[str]]:
    index: dict[ObjectKey, set[str]] = {}
    for piece in slices:
        if piece.service:
            index.setdefault((piece.namespace, piece.service), set()).add(piece.name)
    return {owner: frozenset(names) for owner, names in index.items()}


def _refs(service: Service | None) -> set[ServiceRef]:
    if service is None:
        return set()
    return {ServiceRef(service.namespace, service.name, port.port) for port in service.ports}


def _all_endpoints(cluster: str, state: ClusterState) -> dict[ServiceRef, tuple[Endpoint, ...]]:
    endpoints: dict[ServiceRef, tuple[Endpoint, ...]] = {}
    for key in state.services:
        endpoints.update(_service_endpoints(cluster, state, key))
    return endpoints


def _service_endpoints(
    cluster: str, state: ClusterState, key: ObjectKey
) -> dict[ServiceRef, tuple[Endpoint, ...]]:
    service = state.services.get(key)
    if service is None or service.type == "ExternalName":
        return {}
    slices = [state.slices[(key[0], name)] for name in state.slices_by_service.get(key, ())]
    result: dict[ServiceRef, tuple[Endpoint, ...]] = {}
    for port in service.ports:
        if port.protocol != "TCP":
            continue
        found: dict[tuple[str, int], Endpoint] = {}
        for piece in slices:
            target = next(
                (p.port for p in piece.ports if (p.name, p.protocol) == (port.name, port.protocol)),
                None,
            )
            if target is None:
                continue
            for item in piece.endpoints:
                if item.ready:
                    ready = True
                elif item.serving and item.terminating:
                    ready = False
                else:
                    continue
                zone = item.zone
                if item.hint_zones and zone not in item.hint_zones:
                    zone = item.hint_zones[0]
                previous = found.get((item.address, target))
                if previous is None or (ready and not previous.ready):
                    found[(item.address, target)] = Endpoint(
                        item.address, target, cluster, zone=zone, ready=ready
                    )
        result[ServiceRef(service.namespace, service.name, port.port)] = tuple(
            sorted(found.values(), key=lambda e: (e.host, e.port))
        )
    return result
