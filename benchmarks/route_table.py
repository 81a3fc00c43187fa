"""The policy directory fleetgate is benchmarked with: a table of N HTTPRoutes and one
MemberCluster whose static endpoint is the shared backend. Builds YAML text (pure) and writes it.

Every route has its own hostname and two rules, so the gateway does a real host lookup and rule
match on each request; the load hits one route in the middle of the table.

With `resilience`, the same table with the resilience features on (the issue's "benchmark with
health checks, outlier detection and retries enabled"): the MemberCluster gets an active health
check and the routes become TrafficPolicies (HTTPRoute has no retry or outlier fields) with
retries on connect failures, resets and gateway errors, and outlier detection.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

NAMESPACE = "shop"
SERVICE = "web"
SERVICE_PORT = 80
CLUSTER = "bench"


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """What the load generator sends so that it hits a real route."""

    host: str
    path: str


def hostname(index: int) -> str:
    return f"svc-{index:04d}.bench.test"


def target(routes: int) -> Target:
    return Target(host=hostname(routes // 2), path="/api/items")


HEALTH_CHECK = {"path": "/healthz", "interval": "5s", "timeout": "1s"}
RETRY = {"attempts": 1, "retryOn": ["connect-failure", "reset", "gateway-error"]}
OUTLIER_DETECTION = {"consecutiveErrors": 5, "baseEjectionTime": "30s"}


def member_cluster_yaml(endpoint: str, *, health_check: bool = False) -> str:
    document: dict[str, Any] = {
        "apiVersion": "fleetgate.io/v1alpha1",
        "kind": "MemberCluster",
        "metadata": {"name": CLUSTER, "labels": {"region": "local"}},
        "spec": {
            "priority": 0,
            "services": [
                {
                    "namespace": NAMESPACE,
                    "name": SERVICE,
                    "ports": [{"port": SERVICE_PORT, "endpoints": [endpoint]}],
                }
            ],
        },
    }
    if health_check:
        document["spec"]["healthCheck"] = HEALTH_CHECK
    return yaml.safe_dump(document, sort_keys=False)


def resilient_routes_yaml(routes: int) -> str:
    """`routes_yaml` as TrafficPolicies with retries and outlier detection."""
    documents = list(yaml.safe_load_all(routes_yaml(routes)))
    for document in documents:
        document["apiVersion"] = "fleetgate.io/v1alpha1"
        document["kind"] = "TrafficPolicy"
        document["spec"]["retry"] = RETRY
        document["spec"]["outlierDetection"] = OUTLIER_DETECTION
    return yaml.safe_dump_all(documents, sort_keys=False)


def routes_yaml(routes: int) -> str:
    backend_refs = [{"name": SERVICE, "namespace": NAMESPACE, "port": SERVICE_PORT}]
    documents = [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": f"route-{i:04d}", "namespace": NAMESPACE},
            "spec": {
                "hostnames": [hostname(i)],
                "rules": [
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                        "backendRefs": backend_refs,
                    },
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                        "backendRefs": backend_refs,
                    },
                ],
            },
        }
        for i in range(routes)
    ]
    return yaml.safe_dump_all(documents, sort_keys=False)


def write_policy_dir(
    directory: Path, *, routes: int, endpoint: str, resilience: bool = False
) -> Target:
    """Write `clusters.yaml` and `routes.yaml` into `directory`; return where to send load."""
    if routes < 1:
        raise ValueError("the route table needs at least one route")
    directory.mkdir(parents=True, exist_ok=True)
    clusters = member_cluster_yaml(endpoint, health_check=resilience)
    (directory / "clusters.yaml").write_text(clusters)
    table = resilient_routes_yaml(routes) if resilience else routes_yaml(routes)
    (directory / "routes.yaml").write_text(table)
    return target(routes)
