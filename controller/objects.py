"""Kubernetes objects as the controller sees them: typed, frozen, parsed from API JSON. Pure.

`controller.kube` turns every API answer into these (only it, `kube_config` and `kube_leases`
touch kubernetes_asyncio); everything above works on them. Parsers are lenient the way kube-proxy
is: a field of the wrong type is treated as absent, so one odd object never stops a watch.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

RawObject = Mapping[str, Any]  # an object's JSON as decoded; never mutated


@dataclasses.dataclass(frozen=True, slots=True)
class Resource:
    """A served resource: the coordinates kube needs to list, watch and write it."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


SERVICES = Resource("", "v1", "services", "Service", namespaced=True)
SECRETS = Resource("", "v1", "secrets", "Secret", namespaced=True)
ENDPOINT_SLICES = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease", namespaced=True)
TRAFFIC_POLICIES = Resource("fleetgate.io", "v1alpha1", "trafficpolicies", "TrafficPolicy", True)
MEMBER_CLUSTERS = Resource("fleetgate.io", "v1alpha1", "memberclusters", "MemberCluster", False)
RELEASES = Resource("fleetgate.io", "v1alpha1", "releases", "Release", namespaced=True)
HTTP_ROUTES = Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute", True)


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectMeta:
    name: str
    namespace: str | None  # None for cluster-scoped objects
    uid: str
    resource_version: str
    generation: int
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    creation_timestamp: str | None  # RFC 3339, as the server wrote it

    @property
    def key(self) -> tuple[str, str]:
        """(namespace or "", name): unique within one resource of one cluster."""
        return (self.namespace or "", self.name)


@dataclasses.dataclass(frozen=True, slots=True)
class KubeObject:
    """Any object: its parsed metadata and its whole JSON body (spec, status, ...)."""

    meta: ObjectMeta
    raw: RawObject


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectList:
    """A LIST answer: the items and the resourceVersion to start watching from."""

    resource_version: str
    items: tuple[KubeObject, ...]


class EventType(enum.Enum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    BOOKMARK = "BOOKMARK"  # only advances the resourceVersion; `obj` is None


@dataclasses.dataclass(frozen=True, slots=True)
class WatchEvent:
    type: EventType
    resource_version: str  # where a restarted watch resumes after this event
    obj: KubeObject | None


def parse_object(raw: Any) -> KubeObject:
    """Metadata of any object; ValueError when the JSON is not an object with a name."""
    if not isinstance(raw, dict):
        raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
    meta = _map(raw.get("metadata"))
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("object without metadata.name")
    namespace = meta.get("namespace")
    generation = meta.get("generation")
    return KubeObject(
        ObjectMeta(
            name=name,
            namespace=namespace if isinstance(namespace, str) and namespace else None,
            uid=_str(meta.get("uid")) or "",
            resource_version=_str(meta.get("resourceVersion")) or "",
            generation=generation if isinstance(generation, int) else 0,
            labels=_str_map(meta.get("labels")),
            annotations=_str_map(meta.get("annotations")),
            creation_timestamp=_str(meta.get("creationTimestamp")),
        ),
        raw,
    )


# -- Service ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ServicePort:
    name: str  # "" when the Service has a single unnamed port
    port: int
    protocol: str  # "TCP" | "UDP" | "SCTP"


@dataclasses.dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    type: str  # "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ports: tuple[ServicePort, ...]


def parse_service(obj: KubeObject) -> Service:
    spec = _map(obj.raw.get("spec"))
    ports = []
    for item in _list(spec.get("ports")):
        port = _map(item).get("port")
        if isinstance(port, int):
            ports.append(
                ServicePort(
                    name=_str(_map(item).get("name")) or "",
                    port=port,
                    protocol=_str(_map(item).get("protocol")) or "TCP",
                )
            )
    return Service(
        namespace=obj.meta.namespace or "",
        name=obj.meta.name,
        type=_str(spec.get("type")) or "ClusterIP",
        ports=tuple(ports),
    )


# -- EndpointSlice (discovery.k8s.io/v1) -----------------------------------------------------

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclasses.dataclass(frozen=True, slots=True)
class SliceEndpoint:
    """One endpoint of a slice. Conditions follow the API's nil rules: ready and serving unset
    mean True ("unknown, interpret as ready"), terminating unset means False."""

    address: str  # the first address; the API says the others are fungible
    ready: bool
    serving: bool
    terminating: bool
    zone: str | None
    hint_zones: tuple[str, ...]  # hints.forZones: zones that should consume this endpoint


@dataclasses.dataclass(frozen=True, slots=True)
class SlicePort:
    name: str  # matches the Service port's name ("" for an unnamed port)
    port: int
    protocol: str


@dataclasses.dataclass(frozen=True, slots=True)
class EndpointSlice:
    namespace: str
    name: str
    service: str | None  # the kubernetes.io/service-name label
    address_type: str  # "IPv4" | "IPv6" | "FQDN"
    endpoints: tuple[SliceEndpoint, ...]
    ports: tuple[SlicePort, ...]


def parse_endpoint_slice(obj: KubeObject) -> EndpointSlice:
    endpoints = []
    for item in _list(obj.raw.get("endpoints")):
        entry = _map(item)
        addresses = entry.get("addresses")
        address = addresses[0] if isinstance(addresses, list) and addresses else None
        if not isinstance(address, str) or not address:
            continue
        conditions = _map(entry.get("conditions"))
        ready, serving = conditions.get("ready"), conditions.get("serving")
        terminating = conditions.get("terminating")
        hints = entry.get("hints")
        endpoints.append(
            SliceEndpoint(
                address=address,
                ready=ready if isinstance(ready, bool) else True,
                serving=serving if isinstance(serving, bool) else True,
                terminating=terminating if isinstance(terminating, bool) else False,
                zone=_str(entry.get("zone")),
                hint_zones=_hint_zones(hints) if hints else (),
            )
        )
    ports = []
    for item in _list(obj.raw.get("ports")):
        port = _map(item).get("port")
        if isinstance(port, int):
            ports.append(
                SlicePort(
                    name=_str(_map(item).get("name")) or "",
                    port=port,
                    protocol=_str(_map(item).get("protocol")) or "TCP",
                )
            )
    return EndpointSlice(
        namespace=obj.meta.namespace or "",
        name=obj.meta.name,
        service=obj.meta.labels.get(SERVICE_NAME_LABEL),
        address_type=_str(obj.raw.get("addressType")) or "IPv4",
        endpoints=tuple(endpoints),
        ports=tuple(ports),
    )


def _hint_zones(hints: Any) -> tuple[str, ...]:
    return tuple(
        zone
        for hint in _list(_map(hints).get("forZones"))
        if (zone := _str(_map(hint).get("name")))
    )


# -- lenient JSON accessors ------------------------------------------------------------------


def _map(value: Any) -> Mapping[str, Any]:
    # JSON objects arrive as dicts; testing for dict is several times cheaper than for Mapping.
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _str_map(value: Any) -> Mapping[str, str]:
    return {k: v for k, v in _map(value).items() if isinstance(v, str)}
