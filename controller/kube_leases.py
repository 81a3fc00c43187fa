"""The Lease record leader election reads and writes, and its conversion to and from
kubernetes_asyncio's typed V1Lease models. Pure: no I/O (`controller.kube` sends and receives them).

Apart from `controller.kube` because it is a different job: kube.py translates requests and
failures for any resource, this module holds one resource's shape. Leases are the only objects
that go through the generated models (everything else is read as raw JSON, see kube.py), so the
model-specific details live here: the whole-second `leaseDurationSeconds`, the empty
`holderIdentity` of a released Lease, and timestamps the client may hand back without a zone.
It imports kubernetes_asyncio for the model classes only (the import-linter contract lists it).
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

from kubernetes_asyncio import client


@dataclasses.dataclass(frozen=True, slots=True)
class LeaseRecord:
    """A coordination.k8s.io/v1 Lease as leader election reads and writes it."""

    namespace: str
    name: str
    holder: str  # holderIdentity; "" when released
    duration_s: float  # leaseDurationSeconds
    acquire_time: datetime.datetime | None
    renew_time: datetime.datetime | None
    transitions: int  # leaseTransitions: how many times the holder changed
    resource_version: str = ""  # "" for a record that was never written


def lease_body(record: LeaseRecord) -> Any:
    """The V1Lease to create or replace (conditional on `record.resource_version` when set)."""
    return client.V1Lease(
        api_version="coordination.k8s.io/v1",
        kind="Lease",
        metadata=client.V1ObjectMeta(
            name=record.name,
            namespace=record.namespace,
            resource_version=record.resource_version or None,
        ),
        spec=client.V1LeaseSpec(
            holder_identity=record.holder,
            lease_duration_seconds=max(1, round(record.duration_s)),
            acquire_time=record.acquire_time,
            renew_time=record.renew_time,
            lease_transitions=record.transitions,
        ),
    )


def lease_record(lease: Any) -> LeaseRecord:
    """The record of a V1Lease the API returned (missing spec fields read as empty)."""
    spec = lease.spec
    return LeaseRecord(
        namespace=lease.metadata.namespace,
        name=lease.metadata.name,
        holder=(spec.holder_identity if spec else None) or "",
        duration_s=float((spec.lease_duration_seconds if spec else None) or 0),
        acquire_time=_utc(spec.acquire_time if spec else None),
        renew_time=_utc(spec.renew_time if spec else None),
        transitions=int((spec.lease_transitions if spec else None) or 0),
        resource_version=lease.metadata.resource_version or "",
    )


def _utc(value: Any) -> datetime.datetime | None:
    if not isinstance(value, datetime.datetime):
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=datetime.UTC)
    return value.astimezone(datetime.UTC)
