"""A standby's read-only view of the leader's releases: the same effective policies, no engine.
Asyncio shell; its only I/O is the reconcile hook.

In Kubernetes mode every replica serves snapshots and gateways may poll any of them, so a standby
must serve the leader's table, overlays included. It reads the leader's saved state (each
Release's `status.release`, the policy-history ConfigMap: `controller.kubestate`) from the
watches it runs anyway, and computes the effective policies with the leader's own function
(`controller.release_effective`). It never advances a release, never writes, and never starts
one (`--auto-start` is the leader's job). When it becomes leader, the new `ReleaseRunner` starts
from the same records, so its first table is the one already served: no weight moves.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from controller import codec
from controller.release_effective import effective_policies
from controller.releases import ReconcileHook
from controller.rollbacks import PolicyHistories
from policies.model import PolicySet
from policies.release_state import ReleaseState

log = logging.getLogger(__name__)


class ReleaseFollower:
    """Hands reconcile the leader's effective policies whenever they may have changed."""

    def __init__(self, reconcile: ReconcileHook, *, retain: int) -> None:
        self._reconcile = reconcile
        self._retain = retain
        self._shown: tuple[int, str] | None = None  # (id of the policy set, saved state) shown
        self._damaged: set[str] = set()  # releases whose record could not be read (logged once)
        self.version: int | None = None  # snapshot version of the latest hand-over

    def forget(self) -> None:
        """Hand over again on the next `show`, even if nothing changed (after a leader term)."""
        self._shown = None

    async def show(
        self, files: PolicySet, document: Mapping[str, Any] | None, *, at: float
    ) -> None:
        """Serve `files` with the state in `document` (a `StateStore` document, or None)."""
        key = (id(files), json.dumps(document, sort_keys=True, default=str))
        if key == self._shown:
            return
        histories = PolicyHistories(retain=self._retain)
        histories.restore((document or {}).get("policies") or {})
        histories.observe(files, at=at)  # files edited since the leader's save win, as there
        states: dict[str, ReleaseState] = {}
        for release_id, entry in ((document or {}).get("releases") or {}).items():
            try:
                states[release_id] = codec.decode(ReleaseState, entry["state"])
            except (KeyError, TypeError, ValueError) as exc:
                if release_id not in self._damaged:
                    log.error("release %s: saved state unreadable, not served: %s", release_id, exc)
                    self._damaged.add(release_id)
                continue
            self._damaged.discard(release_id)
        effective = effective_policies(files, histories, states)
        version = await self._reconcile(effective.policies)
        if version is not None:
            self.version = version
            self._shown = key
