"""Revision history: every applied change numbered, with its reason, time and actor. Pure.

One `History` per subject: a policy (`namespace/name`, content = its model document) or a
release (content = its `policies.overlays.Overlay`). Numbers only grow. Rolling back to revision
N does not rewind the history: it appends a new revision whose content is N's, the way Argo
Rollouts' `undo --to-revision` does, so "who put this back, and when" stays on record. The
controller stores and applies histories; this module only decides what they contain.
"""

from __future__ import annotations

import dataclasses
from typing import Generic, TypeVar

T = TypeVar("T")

DEFAULT_RETAIN = 10


@dataclasses.dataclass(frozen=True, slots=True)
class Revision(Generic[T]):
    number: int  # 1, 2, ... per subject
    at: float  # wall-clock seconds (the controller's clock; shown to people)
    actor: str  # token name, "controller", or "system:<component>"
    reason: str  # one sentence: why the change was made
    content: T


@dataclasses.dataclass(frozen=True, slots=True)
class History(Generic[T]):
    subject: str  # "namespace/name"
    revisions: tuple[Revision[T], ...] = ()  # oldest first, at most `retain` of them

    @property
    def latest(self) -> Revision[T] | None:
        return self.revisions[-1] if self.revisions else None

    @property
    def next_number(self) -> int:
        return self.revisions[-1].number + 1 if self.revisions else 1


def record(history: History[T], revision: Revision[T], *, retain: int) -> History[T]:
    """Append a revision numbered by its producer (a release numbers its own overlays).

    A number that is not newer than the latest is a replay (e.g. a controller resuming from its
    state file re-announcing the live overlay) and leaves the history as it is."""
    if history.revisions and revision.number <= history.revisions[-1].number:
        return history
    kept = (*history.revisions, revision)[-max(retain, 1) :]
    return dataclasses.replace(history, revisions=kept)


def append(
    history: History[T], content: T, *, at: float, actor: str, reason: str, retain: int
) -> History[T]:
    """Append a revision with the next number."""
    revision = Revision(history.next_number, at, actor, reason, content)
    return record(history, revision, retain=retain)


def find(history: History[T], number: int) -> Revision[T] | None:
    """The retained revision with this number, if it is still retained."""
    return next((r for r in history.revisions if r.number == number), None)


def rollback(
    history: History[T], number: int, *, at: float, actor: str, retain: int
) -> History[T] | None:
    """The history with revision `number`'s content re-applied as a new revision; None when that
    revision is not retained (the caller reports which ones are)."""
    target = find(history, number)
    if target is None:
        return None
    reason = f"rollback to revision {number}"
    return append(history, target.content, at=at, actor=actor, reason=reason, retain=retain)
