"""Release state in Kubernetes mode: each release's record in its Release's status, the policy
revision histories in a ConfigMap. Network I/O through controller.kube; the parsing is pure.

A `KubeStateStore` is the `controller.statefile.StateStore` of a Kubernetes-mode leader: the
runner hands it the same document a state file would hold, and it spreads it over the objects.

* **Each release's record** goes into `status.release` of its Release, through the status
  subresource with a JSON merge patch, next to the conditions `controller.status` writes there
  (`status.conditions`, `status.observedGeneration`): a merge patch only touches the keys it
  names, so the two writers never undo each other. `status.release` shows `phase`, `step`,
  `canaryWeight`, `revision` and `message` for `kubectl get -o yaml`, and `record`: the whole
  record as one JSON string. A string because a merge patch merges nested objects key by key
  and cannot store `null` (it deletes), so a nested record would keep stale keys and lose fields
  that went back to None; and because the record may hold `Infinity` (a pause until promoted),
  which the API server's JSON does not accept. Only releases whose record changed are patched.
* **The policy histories** (revisions of every TrafficPolicy and HTTPRoute, and the rollback
  overrides in force) go into the ConfigMap `fleetgate-policy-history` in the controller's
  namespace, key `policies.json`. ConfigMaps hold up to 1 MiB; `--retain` bounds the size.

A status write changes no generation, so the hub source does not reload policies because of it
(`controller.hubsource`), and every replica sees the records through the Release watch it runs
anyway: standbys apply them read-only (`controller.release_follow`), so every replica serves the
same table. A new leader reads the records with a fresh LIST, not from its watch cache, and
resumes every release where the old leader left it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from controller import errors, objects
from controller.kube import CONFIG_MAPS, ClusterClient
from controller.objects import KubeObject
from controller.statefile import FORMAT, StateFileError

log = logging.getLogger(__name__)

STATUS_KEY = "release"  # status.release of a Release
CONFIG_MAP = "fleetgate-policy-history"
POLICIES_KEY = "policies.json"
LABELS = {"app.kubernetes.io/managed-by": "fleetgate", "fleetgate.io/state": "policy-history"}
LABEL_SELECTOR = "fleetgate.io/state=policy-history"

__all__ = ["CONFIG_MAPS", "KubeStateStore", "policies_of", "record_of", "status_patch"]


def _text(value: Any) -> str:
    # Infinity is allowed inside the string (codec reads it back); sorted keys make the text a
    # stable identity for "did this record change".
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def status_patch(entry: Mapping[str, Any]) -> dict[str, Any]:
    """`status.release` for a record (`controller.release_records.dump`)."""
    state = entry.get("state") or {}
    return {
        "phase": state.get("phase"),
        "step": state.get("step_index"),
        "canaryWeight": state.get("canary_weight"),
        "revision": state.get("revision"),
        "message": state.get("message"),
        "record": _text({**entry, "format": FORMAT}),
    }


def record_of(obj: KubeObject) -> dict[str, Any] | None:
    """The record in a Release's status, or None when it has none. Raises StateFileError on a
    record this fleetgate cannot read."""
    status = obj.raw.get("status")
    section = status.get(STATUS_KEY) if isinstance(status, Mapping) else None
    text = section.get("record") if isinstance(section, Mapping) else None
    if text is None:
        return None
    where = f"status.{STATUS_KEY}.record of Release {obj.meta.namespace}/{obj.meta.name}"
    return _document(text, where)


def policies_of(data: Mapping[str, str]) -> dict[str, Any] | None:
    """The policy histories in the ConfigMap's data, or None. Raises StateFileError."""
    text = data.get(POLICIES_KEY)
    if text is None:
        return None
    return _document(text, f"{POLICIES_KEY} of ConfigMap {CONFIG_MAP}")


def _document(text: Any, where: str) -> dict[str, Any]:
    try:
        document = json.loads(text) if isinstance(text, str) else None
    except ValueError as exc:
        raise StateFileError(f"{where} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise StateFileError(f"{where} is not a fleetgate state record")
    if int(document.pop("format", FORMAT)) > FORMAT:
        raise StateFileError(f"{where} is newer than this fleetgate understands")
    return document


def document_from(
    releases: Iterable[KubeObject], config_map: Mapping[str, str] | None
) -> dict[str, Any] | None:
    """The runner's state document from Release objects and the ConfigMap's data; None when
    nothing was ever saved. Raises StateFileError on a damaged record."""
    records: dict[str, Any] = {}
    for obj in releases:
        record = record_of(obj)
        if record is not None:
            records[f"{obj.meta.namespace}/{obj.meta.name}"] = record
    policies = policies_of(config_map) if config_map is not None else None
    if not records and policies is None:
        return None
    return {"releases": records, "policies": policies or {}}


class KubeStateStore:
    """A `StateStore` in the hub cluster (see the module docstring). One per leadership term:
    it remembers what it wrote, so each save patches only what changed."""

    def __init__(self, client: ClusterClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace  # of the ConfigMap (the controller's own namespace)
        self.patches = 0  # status patches written, for status output and tests
        self._written: dict[str, str] = {}  # release id → record text in its status
        self._policies: str | None = None  # text in the ConfigMap

    def revisions(self) -> dict[str, int]:
        """Release id → overlay revision of the record last written to (or read from) it."""
        out: dict[str, int] = {}
        for release_id, text in self._written.items():
            revision = json.loads(text).get("state", {}).get("revision")
            if isinstance(revision, int):
                out[release_id] = revision
        return out

    async def load(self) -> Mapping[str, Any] | None:
        """Read every Release's record (a fresh LIST) and the ConfigMap."""
        listed = await self.client.list_objects(objects.RELEASES)
        try:
            data: Mapping[str, str] | None = await self.client.read_config_map(
                self.namespace, CONFIG_MAP
            )
        except errors.NotFound:
            data = None
        document = document_from(listed.items, data)
        self._written = {
            release_id: _text({**entry, "format": FORMAT})
            for release_id, entry in ((document or {}).get("releases") or {}).items()
        }
        self._policies = data.get(POLICIES_KEY) if data is not None else None
        return document

    async def save(self, document: Mapping[str, Any]) -> None:
        releases: Mapping[str, Any] = document.get("releases") or {}
        for release_id, entry in releases.items():
            patch = status_patch(entry)
            if self._written.get(release_id) == patch["record"]:
                continue
            await self._patch(release_id, patch)
            self._written[release_id] = patch["record"]
        for release_id in [r for r in self._written if r not in releases]:
            # Dropped from the policies (deleted, or no longer valid): a later leader must not
            # bring it back from a stale record.
            await self._patch(release_id, None)
            del self._written[release_id]
        text = _text({**(document.get("policies") or {}), "format": FORMAT})
        if text != self._policies:
            await self.client.write_config_map(
                self.namespace, CONFIG_MAP, {POLICIES_KEY: text}, labels=LABELS
            )
            self._policies = text

    async def _patch(self, release_id: str, section: Mapping[str, Any] | None) -> None:
        namespace, _, name = release_id.partition("/")
        try:
            await self.client.patch_status(
                objects.RELEASES, namespace=namespace, name=name, status={STATUS_KEY: section}
            )
        except errors.NotFound:
            log.info("release %s is gone; its state is not written", release_id)
            return
        self.patches += 1
