"""Kubernetes mode: the controller composed from the hub source, member clusters, DNS, reconcile,
publishing, leader election, releases and status. Wiring of I/O components (Kube API, DNS, HTTP).

    hub objects ──► HubSource ──► policies ──► leader: ReleaseRunner ──────────────► Reconciler
                                          └──► standby: ReleaseFollower ───────────┘    │
    MemberCluster.spec.kubeconfig ──► one Members.watch_cluster per member ──┐        │
    MemberCluster DNS names ──► DnsEndpoints ─────────────────────────────────┴──► inventory
    Reconciler ──► Publisher ──► GET /v1/snapshot (every replica)
    LeaderElector (Lease in the hub) ──► leader only: StatusWriter, ReleaseRunner, operator API

* **Every replica** watches everything, compiles and serves snapshots: a standby is a warm
  spare, and gateways may poll any replica.
* **Only the leader** writes status (conditions, Events) and runs releases. Release state lives
  in the hub (`controller.kubestate`): each release's record in its Release's `status.release`,
  the policy histories in a ConfigMap in `lease_namespace`. A new leader reads them and resumes
  every release where the old one left it, without moving a weight.
* **A standby serves the leader's table**: a `ReleaseFollower` applies the saved records
  read-only (from the Release watch, checked every `follow_interval_s`, and a watch of the
  ConfigMap), so a gateway gets the same weights from any replica, and after a failover the new
  leader's first table is the one already served. The operator API (`add_api_routes`) is
  answered by the leader; a standby answers 503 `not_leader` (controller.api).
* **Member clusters** are reached through `MemberCluster.spec.kubeconfig`: a Secret in the hub
  (`name` in `secret_namespace`, or `namespace/name`; key `kubeconfig`) in Kubernetes, or a file
  (`member_kubeconfigs="file"`) when the controller runs outside one. A change of the reference
  reconnects; a removed MemberCluster takes its endpoints with it. A kubeconfig that cannot be
  used is retried every `connect_retry_s` and shown as `kubeconfig-invalid`.
* Policy changes are compiled at once (`Reconciler.rebuild`), so a status can say which snapshot
  serves a generation; endpoint changes go through the reconciler's debounce.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from controller import api, api_tokens, errors, inventory, kube_config, snapshot_api, statusapi
from controller.dns import DnsEndpoints, DnsSettings
from controller.gateway_registry import RegistrySettings, SharedRegistry
from controller.hubsource import HubLoad, HubSettings, HubSource
from controller.kube import ClusterClient, KubeSettings
from controller.kube_releases import KubeReleases, Roles
from controller.leader import LeaderElector, LeaderSettings
from controller.members import Members, MemberSettings
from controller.publishing import Publisher, PublishSettings
from controller.reconcile import Reconciler, ReconcileSettings, merge_inventory
from controller.releases import ReleaseRunner, ReleaseSettings
from controller.status import ClusterReadiness, Context, StatusWriter
from policies.model import PolicySet
from policies.table import Inventory

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class KubeModeSettings:
    """The Kubernetes-mode controller (process settings)."""

    identity: str  # this replica in the Lease (the pod name)
    lease_namespace: str  # namespace of the leader-election Lease in the hub
    hub_kubeconfig: Path | None = None  # None: the cluster this process runs in
    hub_context: str | None = None  # kubeconfig context of the hub (None: the current one)
    lease_name: str = "fleetgate-controller"
    member_kubeconfigs: str = "secret"  # what spec.kubeconfig names: "secret" or "file"
    secret_namespace: str | None = None  # for Secret names without a namespace (None: lease's)
    lease_duration_s: float = 15.0  # a standby takes over this long after the leader went quiet
    renew_deadline_s: float = 10.0  # the leader steps down when it could not renew this long
    retry_period_s: float = 2.0  # Lease read/renew period
    connect_retry_s: float = 5.0  # retry delay for a member cluster that cannot be connected
    status_interval_s: float = 0.5  # at most one status-writing round per this long
    follow_interval_s: float = 1.0  # a standby checks the Releases' saved state this often
    kube: KubeSettings = dataclasses.field(default_factory=KubeSettings)  # every API client
    hub: HubSettings = dataclasses.field(default_factory=HubSettings)  # hub watch timers
    members: MemberSettings = dataclasses.field(default_factory=MemberSettings)  # member watches
    reconcile: ReconcileSettings = dataclasses.field(default_factory=ReconcileSettings)
    publish: PublishSettings = dataclasses.field(default_factory=PublishSettings)
    dns: DnsSettings = dataclasses.field(default_factory=DnsSettings)
    releases: ReleaseSettings = dataclasses.field(default_factory=ReleaseSettings)
    # the gateways polling each replica, shared so the leader's rollouts count them all
    gateway_registry: RegistrySettings = dataclasses.field(default_factory=RegistrySettings)

    def __post_init__(self) -> None:
        if self.member_kubeconfigs not in ("secret", "file"):
            raise ValueError(
                f'member kubeconfigs come from "secret" or "file", got {self.member_kubeconfigs!r}'
            )
        if self.releases.state_file is not None:
            raise ValueError("in Kubernetes mode release state lives in the Release objects")


async def connect_hub(settings: KubeModeSettings) -> ClusterClient:
    if settings.hub_kubeconfig is None:
        return await kube_config.connect_in_cluster("hub", settings=settings.kube)
    return await kube_config.connect(
        "hub", settings.hub_kubeconfig, context=settings.hub_context, settings=settings.kube
    )


@dataclasses.dataclass(slots=True)
class _Link:
    """One member cluster being followed."""

    kubeconfig: str
    task: asyncio.Task[None]


class KubeController:
    """One controller replica. `run()` until cancelled; serve `add_routes` meanwhile."""

    def __init__(self, settings: KubeModeSettings, hub: ClusterClient) -> None:
        self.settings = settings
        self.hub = hub
        self.publisher = Publisher(settings.publish)
        self.reconciler = Reconciler(self.publisher, settings.reconcile)
        self.members = Members(settings.members, on_change=self._inventory_changed)
        self.dns = DnsEndpoints(settings.dns, on_change=lambda _: self._inventory_changed())
        self.source = HubSource(hub, settings.hub, self._loaded)
        self.elector = LeaderElector(
            hub,
            LeaderSettings(
                identity=settings.identity,
                namespace=settings.lease_namespace,
                name=settings.lease_name,
                lease_duration_s=settings.lease_duration_s,
                renew_deadline_s=settings.renew_deadline_s,
                retry_period_s=settings.retry_period_s,
            ),
            on_started_leading=self._started_leading,
            on_stopped_leading=self._stopped_leading,
        )
        self.writer = StatusWriter(hub)
        self.gateway_registry = SharedRegistry(
            hub,
            self.publisher,
            identity=settings.identity,
            namespace=settings.lease_namespace,
            leading=lambda: self.elector.is_leader,
            settings=settings.gateway_registry,
        )
        self._load: HubLoad | None = None
        self._serial = 0  # of the latest load
        self._programmed: tuple[int, int | None] = (0, None)  # (load serial, version serving it)
        self._links: dict[str, _Link] = {}
        self._link_errors: dict[str, errors.ControllerError] = {}
        self._group: asyncio.TaskGroup | None = None
        self._status_wanted = asyncio.Event()
        self._leading = asyncio.Event()
        self._following = asyncio.Event()
        self._following.set()
        self.releases = KubeReleases(
            settings.releases,
            hub,
            self.source,
            self.publisher,
            self._hand_over,
            Roles(
                self._leading,
                self._following,
                lambda: self.elector.is_leader,
                lambda: self.elector.holder,
                settings.identity,
            ),
            namespace=settings.lease_namespace,
            watch=settings.hub.watch,
            follow_interval_s=settings.follow_interval_s,
            retry_s=settings.connect_retry_s,
        )
        self._inventory_scheduled = False
        self._readiness: dict[str, ClusterReadiness] = {}

    @property
    def load(self) -> HubLoad | None:
        return self._load

    @property
    def ready(self) -> bool:
        """A snapshot is published (what `/readyz` answers)."""
        return self.publisher.latest is not None

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                group.create_task(self.source.run(), name="kubemode.hub")
                group.create_task(self.reconciler.run(), name="kubemode.reconcile")
                group.create_task(self.dns.run(), name="kubemode.dns")
                group.create_task(self.elector.run(), name="kubemode.leader")
                group.create_task(self._write_status(), name="kubemode.status")
                group.create_task(self.releases.run(), name="kubemode.releases")
                group.create_task(self.gateway_registry.run(), name="kubemode.gateways")
        finally:
            self._group = None

    def add_routes(self, app: web.Application) -> None:
        """The snapshot API and `/v1/status` on `app`."""
        snapshot_api.add_routes(app, self.publisher)
        statusapi.add_routes(app, self.status_document)

    @property
    def runner(self) -> ReleaseRunner | None:
        """The release runner while leading."""
        return self.releases.runner

    def add_api_routes(self, app: web.Application, tokens: api_tokens.Tokens) -> None:
        """The operator API on `app`: answered by the leader, 503 `not_leader` on a standby."""
        api.add_routes(app, self.releases.api_backend(), tokens)

    # -- policies ------------------------------------------------------------------------------

    def _loaded(self, load: HubLoad) -> None:
        """HubSource's deliver: a new whole policy set."""
        self._load = load
        self._serial += 1
        self.dns.update_policies(load.policies)
        self._follow_members(load.policies)
        self.releases.update_policies(load)
        self._status_wanted.set()

    async def _hand_over(self, policies: PolicySet) -> int | None:
        """Compile `policies` now (the ReleaseRunner's reconcile hook too); the version serving
        them, or None when they did not compile."""
        serial, load = self._serial, self._load
        self.reconciler.update_policies(policies, load.refused if load else frozenset())
        await self.reconciler.rebuild()
        status = self.reconciler.status
        if status.last_error is not None:
            return None
        self._programmed = (serial, status.version)
        self._status_wanted.set()
        return status.version

    # -- leadership ----------------------------------------------------------------------------

    def _started_leading(self) -> None:
        self._following.clear()
        self._leading.set()
        self._status_wanted.set()

    def _stopped_leading(self) -> None:
        self._leading.clear()
        self._following.set()
        self.writer.forget()

    # -- status --------------------------------------------------------------------------------

    async def _write_status(self) -> None:
        while True:
            await self._status_wanted.wait()
            self._status_wanted.clear()
            load = self._load
            if load is None or not self.elector.is_leader:
                continue
            documents = [
                self.source.current(d.resource, d.obj.meta.namespace, d.obj.meta.name) or d
                for d in load.documents
            ]
            try:
                await self.writer.write(documents, load, self.context())
            # Top of a long-lived task: a status bug must not stop serving snapshots.
            except Exception:
                log.exception("status round failed")
            await asyncio.sleep(self.settings.status_interval_s)

    def context(self) -> Context:
        serial, version = self._programmed
        load = self._load
        services: frozenset[Any] = frozenset()
        if load is not None and self._members_synced():
            merged = merge_inventory(load.policies, self._observed())
            services = frozenset(ref for _, ref in merged.endpoints)
        return Context(
            version=version if serial == self._serial else None,
            services=services,
            clusters=dict(self._readiness),
        )

    def _members_synced(self) -> bool:
        clusters = self.members.observed.clusters
        for name in self._links:
            health = self.members.health(name)
            state = clusters.get(name)
            if name in self._link_errors or (health is not None and not health.up):
                continue
            if state is None or not state.synced:
                return False
        return True

    def _observed(self) -> Inventory:
        return Inventory({**self.members.inventory().endpoints, **self.dns.inventory.endpoints})

    def _inventory_changed(self) -> None:
        """Members/DNS changed (called per event): push once per loop iteration."""
        if self._inventory_scheduled:
            return
        self._inventory_scheduled = True
        asyncio.get_running_loop().call_soon(self._push_inventory)

    def _push_inventory(self) -> None:
        self._inventory_scheduled = False
        self.reconciler.update_inventory(self._observed())
        readiness = self.cluster_readiness()
        if readiness != self._readiness:
            self._readiness = readiness
            self._status_wanted.set()

    def cluster_readiness(self) -> dict[str, ClusterReadiness]:
        out: dict[str, ClusterReadiness] = {}
        withdrawn = self.members.withdrawn()
        for name in sorted(self._links):
            error = self._link_errors.get(name)
            health = self.members.health(name)
            if error is not None:
                reason = (
                    "KubeconfigInvalid" if isinstance(error, errors.ConfigError) else "Unreachable"
                )
                out[name] = ClusterReadiness(False, reason, str(error))
            elif health is None:
                continue
            elif name in withdrawn:
                message = f"{health.detail}; its endpoints left the table"
                out[name] = ClusterReadiness(False, "Withdrawn", message)
            elif not health.up:
                message = f"{health.detail}; its endpoints stay published for the grace period"
                out[name] = ClusterReadiness(False, "Unreachable", message)
            else:
                out[name] = ClusterReadiness(True, "Ready", "the API server answers /readyz")
        return out

    # -- member clusters -----------------------------------------------------------------------

    def _follow_members(self, policies: PolicySet) -> None:
        wanted = {c.name: c.kubeconfig for c in policies.clusters if c.kubeconfig}
        stopped: dict[str, asyncio.Task[None]] = {}
        for name, link in list(self._links.items()):
            if wanted.get(name) != link.kubeconfig:
                link.task.cancel()
                stopped[name] = link.task
                del self._links[name]
                self._link_errors.pop(name, None)
                log.info("member cluster %s: no longer followed through %s", name, link.kubeconfig)
        group = self._group
        if group is None:
            return
        for name, ref in sorted(wanted.items()):
            if name not in self._links:
                follow = self._follow_member(name, ref, stopped.get(name))
                self._links[name] = _Link(ref, group.create_task(follow, name=f"member {name}"))
        self._inventory_changed()

    async def _follow_member(
        self, name: str, ref: str, previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None:  # the old link's state leaves first (Members allows one)
            await asyncio.wait([previous])
        while True:
            try:
                client = await self._connect_member(name, ref)
            except errors.ControllerError as exc:
                self._link_errors[name] = exc
                self._inventory_changed()
                log.warning("member cluster %s: cannot connect: %s", name, exc)
                await asyncio.sleep(self.settings.connect_retry_s)
                continue
            self._link_errors.pop(name, None)
            log.info("member cluster %s: following through %s", name, ref)
            try:
                await self._watch_member(client)
            finally:
                await client.close()
            await asyncio.sleep(self.settings.connect_retry_s)

    async def _watch_member(self, client: ClusterClient) -> None:
        try:
            await self.members.watch_cluster(client)
        # Top of a member's task: a bug in one cluster's handling must not stop the others.
        except Exception:
            log.exception("member cluster %s: watching failed; reconnecting", client.cluster)

    async def _connect_member(self, name: str, ref: str) -> ClusterClient:
        settings = self.settings
        if settings.member_kubeconfigs == "file":
            return await kube_config.connect(name, Path(ref), settings=settings.kube)
        namespace, _, secret = ref.rpartition("/")
        namespace = namespace or settings.secret_namespace or settings.lease_namespace
        data = await self.hub.read_secret(namespace, secret)
        return await kube_config.connect(
            name, kube_config.kubeconfig_from_secret(data), settings=settings.kube
        )

    # -- the status document -------------------------------------------------------------------

    def status_document(self) -> Mapping[str, Any]:
        load = self._load
        return {
            "controller": {
                "id": self.settings.identity,
                "mode": "kubernetes",
                "leader": self.elector.is_leader,
                "holder": self.elector.holder,
                "hub": self.source.status.synced,
            },
            "snapshot": statusapi.snapshot_section(self.publisher),
            "clusters": self._clusters_section(load),
            "dns": {"names": statusapi.dns_section(self.dns.status())},
            "gateways": statusapi.gateways_section(self.publisher),
            "policies": _policies_section(load),
            "reconcile": dataclasses.asdict(self.reconciler.status),
        }

    def _clusters_section(self, load: HubLoad | None) -> list[dict[str, Any]]:
        observed = statusapi.by_cluster(
            inventory.to_inventory(self.members.observed).endpoints.items()
        )
        static = statusapi.by_cluster(
            merge_inventory(load.policies, self.dns.inventory).endpoints.items() if load else ()
        )
        readiness = self.cluster_readiness()
        out = []
        for cluster in load.policies.clusters if load else ():
            name = cluster.name
            if not cluster.kubeconfig:
                state, reachable, detail = "static", None, "endpoints from the policy"
                services = static.get(name, {})
            else:
                services = {**static.get(name, {}), **observed.get(name, {})}
                ready = readiness.get(name)
                if ready is None:
                    state, reachable, detail = "connecting", None, ""
                else:
                    state = {
                        "Ready": "up",
                        "Unreachable": "down",
                        "Withdrawn": "withdrawn",
                        "KubeconfigInvalid": "kubeconfig-invalid",
                    }.get(ready.reason, "down")
                    reachable, detail = ready.ready, ready.message
            out.append(
                {
                    "name": name,
                    "state": state,
                    "reachable": reachable,
                    "detail": detail,
                    "priority": cluster.priority,
                    "services": statusapi.service_counts(services),
                }
            )
        return out


def _policies_section(load: HubLoad | None) -> list[dict[str, Any]]:
    if load is None:
        return []
    out = []
    for doc in load.documents:
        held = load.held.get(doc.name)
        out.append(
            {
                "kind": doc.resource.kind,
                "namespace": doc.obj.meta.namespace,
                "name": doc.obj.meta.name,
                "generation": doc.obj.meta.generation,
                "accepted": load.accepted(doc.name),
                "held_generation": held.obj.meta.generation if held else None,
                "problems": [str(p) for p in load.problems_of(doc.name)],
            }
        )
    return out
