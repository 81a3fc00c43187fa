"""The gateway registry shared between Kubernetes-mode replicas, through ConfigMaps in the hub.

Gateways may poll any replica (one Service in front of all of them), but only the leader runs
releases, and "a step counts as applied only when every gateway has applied it". Each replica
therefore shares the gateways polling it, and the leader counts them in its rollouts
(`Publisher.feed_remote`):

* Every replica writes ConfigMap `fleetgate-gateways-<replica id>` in the controllers' namespace,
  key `gateways.json`: its identity, when it wrote, and each live gateway's id, zone, the
  checksum of the table it serves (version numbers are per replica; content checksums are not)
  and when it was last seen (the write time while it is polling). It writes when that set
  changed, at most once per `interval_s`, and at least every `heartbeat_s` so that the entries
  of a replica that went away age out.
* The leader lists the others' ConfigMaps every `interval_s` and hands their entries to its
  publisher, which counts a gateway as applied when its checksum is one the leader published at
  the step's version or later. An entry not seen within `PublishSettings.stale_after_s` drops out
  as in the local registry; a gateway that moved to another replica counts where it was seen
  last.
* A standby feeds nothing: it runs no releases. A replica that wins the lead counts no step
  applied until its first read of the others' entries has succeeded (`Publisher.forget_remote`).

A stopped replica's ConfigMap is left behind (no delete right needed); its entries stop counting
once they are older than the liveness window, or as soon as their gateways poll another replica.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from controller import errors
from controller.kube import CONFIG_MAPS, ClusterClient
from controller.objects import KubeObject
from controller.publishing import Publisher
from controller.remote_gateways import RemoteGateway

log = logging.getLogger(__name__)

PREFIX = "fleetgate-gateways-"
KEY = "gateways.json"
LABELS = {"app.kubernetes.io/managed-by": "fleetgate", "fleetgate.io/state": "gateways"}
SELECTOR = ",".join(f"{k}={v}" for k, v in LABELS.items())

Clock = Callable[[], datetime.datetime]


@dataclasses.dataclass(frozen=True, slots=True)
class RegistrySettings:
    """How often the shared registry is written and read (controller process settings)."""

    interval_s: float = 1.0  # at most one write, and one read by the leader, per this long
    heartbeat_s: float = 10.0  # rewritten this often even unchanged (well below stale_after_s)


def config_map_name(replica: str) -> str:
    """A valid ConfigMap name for `replica` (pod names already are; anything else is mapped)."""
    cleaned = re.sub(r"[^a-z0-9.-]+", "-", replica.lower()).strip("-.") or "replica"
    return (PREFIX + cleaned)[:253].rstrip("-.")


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def encode(replica: str, entries: Iterable[RemoteGateway], now: datetime.datetime) -> str:
    gateways = [
        {
            "id": e.id,
            "zone": e.zone,
            "checksum": e.checksum,
            "seen": _iso(now - datetime.timedelta(seconds=e.seen_ago_s)),
        }
        for e in entries
    ]
    return json.dumps({"replica": replica, "written": _iso(now), "gateways": gateways})


def decode(text: str, now: datetime.datetime) -> tuple[RemoteGateway, ...]:
    """The entries of one replica's ConfigMap; ValueError when it is not ours or damaged."""
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("replica"), str):
        raise ValueError("not a gateway registry document")
    replica = data["replica"]
    out = []
    for item in data.get("gateways") or ():
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise ValueError(f"bad gateway entry {item!r}")
        seen = datetime.datetime.fromisoformat(str(item["seen"]))
        zone, checksum = item.get("zone"), item.get("checksum")
        out.append(
            RemoteGateway(
                id=item["id"],
                zone=zone if isinstance(zone, str) else None,
                checksum=checksum if isinstance(checksum, str) else None,
                replica=replica,
                seen_ago_s=max(0.0, (now - seen).total_seconds()),
            )
        )
    return tuple(out)


class SharedRegistry:
    """One replica's side: `run()` until cancelled."""

    def __init__(
        self,
        hub: ClusterClient,
        publisher: Publisher,
        *,
        identity: str,
        namespace: str,
        leading: Callable[[], bool],
        settings: RegistrySettings | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.hub = hub
        self.publisher = publisher
        self.identity = identity
        self.namespace = namespace
        self.settings = settings or RegistrySettings()
        self.name = config_map_name(identity)
        self._leading = leading
        self._clock = clock
        self._written: tuple[Any, ...] | None = None  # what the last write said, seen times aside
        self._written_at: datetime.datetime | None = None
        self._was_leading = False
        self.writes = 0  # ConfigMap writes made
        self.reads = 0  # rounds that read the other replicas' entries (while leading)

    async def run(self) -> None:
        while True:
            await self.round()
            await asyncio.sleep(self.settings.interval_s)

    async def round(self) -> None:
        """Write our entries if due; while leading, read the others' and feed them in."""
        try:
            await self._share()
        except errors.ControllerError as exc:
            log.warning("cannot write the gateway registry %s: %s", self.name, exc)
        if not self._leading():
            self._was_leading = False
            self.publisher.feed_remote(())
            return
        if not self._was_leading:  # just won: no step counts until the others are read
            self._was_leading = True
            self.publisher.forget_remote()
        try:
            entries = await self._read_others()
        except errors.ControllerError as exc:
            # The entries fed last stay until they age out (none after winning the lead: steps
            # wait): a hub hiccup must not make the other replicas' gateways vanish, or their
            # steps would count applied too early.
            log.warning("cannot read the other replicas' gateway registries: %s", exc)
            return
        self.reads += 1
        self.publisher.feed_remote(entries)

    async def _share(self) -> None:
        now = self._clock()
        entries = self.publisher.shared_entries(self.identity)
        key = tuple((e.id, e.zone, e.checksum) for e in entries)
        due = self._written_at is None or (
            (now - self._written_at).total_seconds() >= self.settings.heartbeat_s
        )
        if key == self._written and not due:
            return
        text = encode(self.identity, entries, now)
        await self.hub.write_config_map(self.namespace, self.name, {KEY: text}, labels=LABELS)
        self._written, self._written_at = key, now
        self.writes += 1

    async def _read_others(self) -> list[RemoteGateway]:
        listed = await self.hub.list_objects(
            CONFIG_MAPS, namespace=self.namespace, label_selector=SELECTOR
        )
        now = self._clock()
        out: list[RemoteGateway] = []
        for obj in listed.items:
            if obj.meta.name == self.name:
                continue
            out.extend(self._entries(obj, now))
        return out

    def _entries(self, obj: KubeObject, now: datetime.datetime) -> tuple[RemoteGateway, ...]:
        data = obj.raw.get("data")
        text = data.get(KEY) if isinstance(data, Mapping) else None
        try:
            if not isinstance(text, str):
                raise ValueError(f"no {KEY}")
            return decode(text, now)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring gateway registry %s: %s", obj.meta.name, exc)
            return ()


def _iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).isoformat(timespec="milliseconds")
