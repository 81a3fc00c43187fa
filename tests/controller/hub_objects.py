"""Builders of hub objects (MemberCluster, TrafficPolicy, HTTPRoute, ReferenceGrant, Release) as
the Kubernetes API serves them, for the hub source, status and end-to-end tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from controller import hubsource, objects
from controller.objects import KubeObject, Resource
from tests.fakes.kube_store import Kind, kind_of

JSON = dict[str, Any]
FLEETGATE = "fleetgate.io/v1alpha1"
GATEWAY = "gateway.networking.k8s.io/v1"

MEMBER_CLUSTER_KIND = kind_of(FLEETGATE, "MemberCluster")
TRAFFIC_POLICY_KIND = kind_of(FLEETGATE, "TrafficPolicy")
HTTP_ROUTE_KIND = kind_of(GATEWAY, "HTTPRoute")
EVENT_KIND = kind_of("v1", "Event")


def member_cluster(
    name: str,
    *,
    kubeconfig: str | None = None,
    priority: int = 0,
    static: Sequence[str] = (),
    service: tuple[str, str, int] = ("shop", "web", 80),
) -> JSON:
    """A MemberCluster discovering through `kubeconfig`, and/or with `static` endpoints."""
    spec: JSON = {"priority": priority}
    if kubeconfig is not None:
        spec["kubeconfig"] = kubeconfig
    if static:
        namespace, svc, port = service
        spec["services"] = [
            {
                "namespace": namespace,
                "name": svc,
                "ports": [{"port": port, "endpoints": list(static)}],
            }
        ]
    return {
        "apiVersion": FLEETGATE,
        "kind": "MemberCluster",
        "metadata": {"name": name, "labels": {"region": name}},
        "spec": spec,
    }


def traffic_policy(
    name: str,
    *,
    namespace: str = "shop",
    hostnames: Sequence[str] = ("shop.example.com",),
    service: str = "web",
    port: int = 80,
    clusters: Sequence[str] = (),
    tiers: bool = False,
    service_namespace: str | None = None,
) -> JSON:
    """One rule sending everything to `service`. `clusters` with `tiers` uses failover tiers
    in the given order (the first cluster is primary); without, the clusters' own priorities."""
    ref: JSON = {"name": service, "port": port}
    if service_namespace is not None:
        ref["namespace"] = service_namespace
    if clusters and tiers:
        ref["clusters"] = [{"name": c, "priority": i} for i, c in enumerate(clusters)]
    elif clusters:
        ref["clusters"] = [{"name": c} for c in clusters]
    return {
        "apiVersion": FLEETGATE,
        "kind": "TrafficPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "hostnames": list(hostnames),
            "rules": [{"name": "all", "backendRefs": [ref]}],
        },
    }


def http_route(
    name: str, *, namespace: str = "shop", hostnames: Sequence[str], service: str = "web"
) -> JSON:
    return {
        "apiVersion": GATEWAY,
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": "fleetgate"}],
            "hostnames": list(hostnames),
            "rules": [{"backendRefs": [{"name": service, "port": 80}]}],
        },
    }


def reference_grant(name: str, *, namespace: str, from_namespace: str, service: str) -> JSON:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "from": [
                {"group": "fleetgate.io", "kind": "TrafficPolicy", "namespace": from_namespace}
            ],
            "to": [{"group": "", "kind": "Service", "name": service}],
        },
    }


RESOURCES: dict[str, Resource] = {
    "MemberCluster": objects.MEMBER_CLUSTERS,
    "TrafficPolicy": objects.TRAFFIC_POLICIES,
    "HTTPRoute": objects.HTTP_ROUTES,
    "ReferenceGrant": hubsource.REFERENCE_GRANTS,
    "Release": objects.RELEASES,
}


def as_hub_object(raw: JSON, *, uid: str | None = None, generation: int = 1) -> KubeObject:
    """`raw` as the hub would serve it (uid and generation filled in)."""
    meta = raw["metadata"]
    namespace = f"{meta['namespace']}/" if meta.get("namespace") else ""
    served = {
        **raw,
        "metadata": {
            "uid": uid or f"uid-{raw['kind']}-{namespace}{meta['name']}",
            "generation": generation,
            "resourceVersion": "1",
            **meta,
        },
    }
    return objects.parse_object(served)


def hub_document(raw: JSON, **options: Any) -> hubsource.HubDocument:
    return hubsource.to_document(RESOURCES[raw["kind"]], as_hub_object(raw, **options))


def stored(kind: Kind, namespace: str | None, name: str, store: Any) -> JSON:
    obj: JSON = store.get(kind, namespace, name)
    return obj
