"""`GET /v1/status`: the controller's state for people and `fleetgate status` (aiohttp server
I/O); the section builders are pure.

The document (JSON, every section always present):

    controller: {id, mode, leader, holder}     who answers, and who leads
    snapshot:   {version, checksum, rollout}   the latest published table ("2/3 gateways on v42")
    clusters:   [{name, state, reachable, detail, services: [{service, ready, total}]}]
                state: "up" | "down" (unreachable, endpoints still published for the grace)
                       | "withdrawn" (its endpoints left the table) | "connecting"
                       | "kubeconfig-invalid" | "static" (endpoints written in the policy)
    gateways:   [{id, zone, applied, behind, lag_s, last_seen_s, live, checksum, replica, ...}]
                the leader's include the other replicas' (`replica`: the one each polls)
    policies:   [{kind, namespace, name, accepted, held_generation, problems: [text]}]
    reconcile:  the rebuild loop's counters and last error

`dns_section` builds the DNS names' part ({name, used_by, condition: "pending" | "fresh" |
"stale" | "failed", addresses, ttl_s, answered_at, stale_since, error, failures}); file mode's
`/status` shows it under `dns.names`.

Each composition (Kubernetes mode, file mode) supplies the document through a `StatusSource`;
this module only serves it and builds the parts they share. File mode's document
(`file_document`) has the same sections: the controller is its own leader, every cluster is
"static" (its endpoints are written in the files, or come from DNS), `policies` lists the routes
served, preceded by the policy directory itself when its last load was refused (the last good
set keeps being served, as a held generation is in Kubernetes mode).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

from controller.dns import DnsNameStatus
from controller.filesource import FileSourceStatus
from controller.publishing import Publisher
from controller.reconcile import ReconcileStatus
from policies.model import PolicySet, ServiceRef
from policies.table import Endpoint, Inventory

StatusSource = Callable[[], Mapping[str, Any]]


@dataclasses.dataclass(frozen=True, slots=True)
class _Provider:
    document: StatusSource


STATUS_SOURCE = web.AppKey("status_source", _Provider)


def add_routes(app: web.Application, source: StatusSource) -> None:
    """Mount `GET /v1/status` on `app` (next to the snapshot API)."""
    app[STATUS_SOURCE] = _Provider(source)
    app.router.add_get("/v1/status", _get_status)


async def _get_status(request: web.Request) -> web.Response:
    document = request.app[STATUS_SOURCE].document()
    return web.json_response(dict(document), headers={"Cache-Control": "no-store"})


def service_counts(
    endpoints: Mapping[ServiceRef, tuple[Endpoint, ...]],
) -> list[dict[str, Any]]:
    """Ready and total endpoints of each service of one cluster, sorted by service."""
    return [
        {
            "service": str(ref),
            "ready": sum(1 for endpoint in found if endpoint.ready),
            "total": len(found),
        }
        for ref, found in sorted(endpoints.items(), key=lambda item: str(item[0]))
    ]


def by_cluster(
    entries: Iterable[tuple[tuple[str, ServiceRef], tuple[Endpoint, ...]]],
) -> dict[str, dict[ServiceRef, tuple[Endpoint, ...]]]:
    """An inventory's `(cluster, service) → endpoints` regrouped per cluster."""
    out: dict[str, dict[ServiceRef, tuple[Endpoint, ...]]] = {}
    for (cluster, ref), found in entries:
        out.setdefault(cluster, {})[ref] = found
    return out


def snapshot_section(publisher: Publisher) -> dict[str, Any]:
    latest = publisher.latest
    return {
        "version": latest.version if latest else None,
        "checksum": latest.checksum if latest else None,
        "rollout": str(publisher.rollout(latest.version)) if latest else None,
    }


def gateways_section(publisher: Publisher) -> list[dict[str, Any]]:
    return [dataclasses.asdict(view) for view in publisher.gateways()]


def dns_section(names: Iterable[DnsNameStatus]) -> list[dict[str, Any]]:
    """One entry per followed DNS name (controller.dns): condition, addresses, error, times."""
    return [{**dataclasses.asdict(name), "condition": name.condition.value} for name in names]


def file_document(
    policies: PolicySet | None,
    source: FileSourceStatus,
    publisher: Publisher,
    inventory: Inventory,
    dns: Iterable[DnsNameStatus],
    reconcile: ReconcileStatus,
) -> dict[str, Any]:
    """The `/v1/status` document of a file-mode controller (`fleetgate controller -c DIR`)."""
    counts = by_cluster(inventory.endpoints.items())
    clusters = [
        {
            "name": cluster.name,
            "state": "static",
            "reachable": None,
            "detail": "endpoints from the policy files",
            "priority": cluster.priority,
            "services": service_counts(counts.get(cluster.name, {})),
        }
        for cluster in (policies.clusters if policies else ())
    ]
    refused: list[dict[str, Any]] = [] if source.ok else [_directory_entry(source)]
    routes: list[dict[str, Any]] = [
        {
            "kind": route.kind.value,
            "namespace": route.namespace,
            "name": route.name,
            "accepted": True,
            "held_generation": None,
            "problems": [],
        }
        for route in (policies.routes if policies else ())
    ]
    return {
        "controller": {"id": source.directory, "mode": "file", "leader": True, "holder": None},
        "snapshot": snapshot_section(publisher),
        "clusters": clusters,
        "dns": {"names": dns_section(dns)},
        "gateways": gateways_section(publisher),
        "policies": refused + routes,
        "reconcile": dataclasses.asdict(reconcile),
    }


def _directory_entry(source: FileSourceStatus) -> dict[str, Any]:
    return {
        "kind": "PolicyDirectory",
        "namespace": None,
        "name": source.directory,
        "accepted": False,
        "held_generation": None,
        "problems": [str(problem) for problem in source.problems],
    }
