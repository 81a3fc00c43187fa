"""Operator actions on one release: which engine function each action name calls. Pure.

`controller.releases.ReleaseRunner.act` looks the release up, calls `decide` under its lock, and
performs the transition; the operator API (`controller.api`) maps URL verbs onto these names.
"""

from __future__ import annotations

from policies import releases
from policies.model import Release
from policies.release_state import Refused, ReleaseState, Transition

ACTIONS = ("start", "promote", "promote_full", "pause", "resume", "abort", "retry", "set_weight")


def decide(
    release_id: str,
    spec: Release,
    state: ReleaseState | None,
    action: str,
    *,
    now: float,
    actor: str,
    weight: int | None = None,
    immediate: bool = False,
) -> Transition | Refused:
    """The engine's answer to `action` on a release in `state` (None: not started)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown release action {action!r}")
    if action == "start":
        if state is not None:
            return Refused(
                "already_started",
                f"release {release_id} was already started ({state.phase.value});"
                " abort and retry it to start over",
            )
        return releases.start(spec, now=now, actor=actor)
    if state is None:
        return Refused("not_started", f"release {release_id} is not started")
    if action == "promote":
        return releases.promote(spec, state, now=now, actor=actor)
    if action == "promote_full":
        return releases.promote_full(spec, state, now=now, actor=actor)
    if action == "pause":
        return releases.pause(spec, state, now=now, actor=actor)
    if action == "resume":
        return releases.resume(spec, state, now=now, actor=actor)
    if action == "abort":
        return releases.abort(spec, state, now=now, actor=actor, immediate=immediate)
    if action == "retry":
        return releases.retry(spec, state, now=now, actor=actor)
    if weight is None:
        return Refused("weight_required", "set-weight needs a weight")
    return releases.set_weight(spec, state, weight=weight, now=now, actor=actor)
