"""Builders of Kubernetes JSON objects (Service, EndpointSlice, ...) for the controller tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from controller import objects
from controller.objects import EventType, KubeObject, WatchEvent

JSON = dict[str, Any]
_rv = iter(range(1_000_000, 2_000_000))


def service(
    name: str, *, namespace: str = "shop", ports: Sequence[tuple[str, int]] = (("http", 80),)
) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "type": "ClusterIP",
            "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports],
        },
    }


def endpoint(
    address: str,
    *,
    ready: bool | None = True,
    serving: bool | None = None,
    terminating: bool | None = None,
    zone: str | None = None,
    hints: Iterable[str] = (),
) -> JSON:
    conditions = {
        key: value
        for key, value in (("ready", ready), ("serving", serving), ("terminating", terminating))
        if value is not None
    }
    entry: JSON = {"addresses": [address], "conditions": conditions}
    if zone:
        entry["zone"] = zone
    if hints:
        entry["hints"] = {"forZones": [{"name": z} for z in hints]}
    return entry


def endpoint_slice(
    name: str,
    *,
    service_name: str,
    endpoints: Iterable[JSON],
    namespace: str = "shop",
    ports: Sequence[tuple[str, int]] = (("http", 8080),),
) -> JSON:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {objects.SERVICE_NAME_LABEL: service_name},
        },
        "addressType": "IPv4",
        "endpoints": list(endpoints),
        "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports],
    }


def as_object(raw: JSON) -> KubeObject:
    """`raw` as the watcher would hand it over (a resourceVersion is made up when missing)."""
    raw = {**raw, "metadata": {"resourceVersion": str(next(_rv)), **raw["metadata"]}}
    return objects.parse_object(raw)


def event(type_: str, raw: JSON) -> WatchEvent:
    obj = as_object(raw)
    return WatchEvent(EventType(type_), obj.meta.resource_version, obj)
