"""Policy revision history, and rollback overrides layered over the operator's files. Pure.

Every route (TrafficPolicy or HTTPRoute, by `namespace/name`) gets a bounded `History` of its
content. A revision is recorded whenever the source delivers a route whose content differs from
the live one (where a document sits in its file does not count as content).

**Rolling back to revision N** (`fleetgate rollback POLICY --to-revision N`) works like Argo
Rollouts' `undo --to-revision`: N's content becomes live *as a new revision* (numbers only grow,
and the record says who rolled back and when). The operator's file is not edited; the rolled-back
content is an override on top of it, and it lasts

* until the operator's own version of that policy changes (an edit, a `git pull`, a
  `kubectl apply` with different content): then their new content wins and becomes the next
  revision, exactly as if they had edited the policy after the rollback. Reloads of unchanged
  content (a restart, a ConfigMap resync, an edit to another file) keep the override;
* or until the policy disappears from the source: the override goes with it.

Rolling back to a revision whose content is what the files say now simply removes the override.
Only a policy that is still in the files can be rolled back. The overrides and histories are part
of the runner's persisted state, so a restart keeps an emergency rollback in place.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, TypeVar

from controller import codec
from policies import revisions
from policies.model import PolicySet, Route
from policies.revisions import History, Revision

T = TypeVar("T")

FILES = "files"  # actor of revisions that come from the policy source


class RollbackRefused(Exception):
    """The rollback cannot be done; `reason` is a stable snake_case code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class UnknownPolicy(LookupError):
    """No history for this policy id."""


def content_key(route: Route) -> str:
    """Identity of a route's content: its encoding without source positions."""
    return json.dumps(_strip_origins(codec.encode(route)), sort_keys=True, separators=(",", ":"))


def _strip_origins(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _strip_origins(v) for k, v in data.items() if k != "origin"}
    if isinstance(data, list):
        return [_strip_origins(item) for item in data]
    return data


class PolicyHistories:
    """Histories of every route seen, and the rollback overrides in force."""

    def __init__(self, *, retain: int) -> None:
        self.retain = retain
        self._histories: dict[str, History[Route]] = {}
        self._keys: dict[str, str] = {}  # content key of each history's latest revision
        self._overrides: dict[str, str] = {}  # route id → content key of the files at rollback
        self._files: dict[str, str] = {}  # route id → content key in the latest delivery

    def observe(self, policies: PolicySet, *, at: float, actor: str = FILES) -> bool:
        """Record what the source delivered; True when any history or override changed."""
        changed = False
        seen: dict[str, str] = {}
        for route in policies.routes:
            key = seen[route.id] = content_key(route)
            base = self._overrides.get(route.id)
            if base is not None:
                if base == key:
                    continue  # the files still say what they said at the rollback
                del self._overrides[route.id]
                changed = True
                reason = f"changed in {route.origin.file}; the rollback override is dropped"
            elif self._keys.get(route.id) == key:
                continue
            elif route.id in self._histories:
                reason = f"changed in {route.origin.file}"
            else:
                reason = f"created from {route.origin.file}"
            self._append(route.id, route, at=at, actor=actor, reason=reason)
            changed = True
        for gone in set(self._overrides) - set(seen):
            del self._overrides[gone]
            changed = True
        self._files = seen
        return changed

    def effective(self, policies: PolicySet) -> PolicySet:
        """`policies` with every rolled-back route replaced by its rolled-back content."""
        if not self._overrides:
            return policies
        routes = []
        for route in policies.routes:
            history = self._histories.get(route.id)
            if route.id in self._overrides and history is not None and history.latest is not None:
                routes.append(history.latest.content)
            else:
                routes.append(route)
        return dataclasses.replace(policies, routes=tuple(routes))

    def rollback(self, route_id: str, number: int, *, at: float, actor: str) -> Revision[Route]:
        """Make revision `number`'s content live as a new revision; see the module docstring."""
        history = self.history(route_id)
        if route_id not in self._files:
            raise RollbackRefused(
                "policy_not_in_files",
                f"policy {route_id} is no longer in the policy source; nothing to roll back",
            )
        rolled = revisions.rollback(history, number, at=at, actor=actor, retain=self.retain)
        if rolled is None:
            kept = ", ".join(str(r.number) for r in history.revisions)
            raise RollbackRefused(
                "revision_not_retained",
                f"policy {route_id} has no revision {number}; retained: {kept}",
            )
        self._histories[route_id] = rolled
        latest = rolled.revisions[-1]
        self._keys[route_id] = key = content_key(latest.content)
        if key == self._files[route_id]:
            self._overrides.pop(route_id, None)
        else:
            self._overrides[route_id] = self._files[route_id]
        return latest

    def history(self, route_id: str) -> History[Route]:
        history = self._histories.get(route_id)
        if history is None:
            raise UnknownPolicy(route_id)
        return history

    def overridden(self, route_id: str) -> bool:
        return route_id in self._overrides

    def ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._histories))

    def _append(self, route_id: str, route: Route, *, at: float, actor: str, reason: str) -> None:
        history = self._histories.get(route_id) or History(route_id)
        self._histories[route_id] = revisions.append(
            history, route, at=at, actor=actor, reason=reason, retain=self.retain
        )
        self._keys[route_id] = content_key(route)

    # -- persistence -------------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        return {
            route_id: {
                "revisions": [encode_revision(r) for r in history.revisions],
                "override_base": self._overrides.get(route_id),
            }
            for route_id, history in self._histories.items()
        }

    def restore(self, document: Mapping[str, Any]) -> None:
        for route_id, entry in document.items():
            revs = tuple(decode_revision(Route, r) for r in entry.get("revisions") or ())
            if not revs:
                continue
            self._histories[route_id] = History(route_id, revs)
            self._keys[route_id] = content_key(revs[-1].content)
            base = entry.get("override_base")
            if isinstance(base, str):
                self._overrides[route_id] = base


def encode_revision(revision: Revision[Any]) -> dict[str, Any]:
    return {
        "number": revision.number,
        "at": revision.at,
        "actor": revision.actor,
        "reason": revision.reason,
        "content": codec.encode(revision.content),
    }


def decode_revision(kind: type[T], data: Mapping[str, Any]) -> Revision[T]:
    return Revision(
        number=codec.decode(int, data["number"]),
        at=codec.decode(float, data["at"]),
        actor=codec.decode(str, data["actor"]),
        reason=codec.decode(str, data["reason"]),
        content=codec.decode(kind, data["content"]),
    )
