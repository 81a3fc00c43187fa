"""The policy set every replica serves while releases run: the operator's documents, rolled-back
policies in place, every started release's overlay applied. Pure.

The leader's `controller.releases.ReleaseRunner` and a standby's `controller.release_follow`
compute it with this one function from the same inputs (the policies, the revision histories and
each release's state), so a standby serves the leader's table, and a new leader's first table is
the one the fleet already serves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from controller.rollbacks import PolicyHistories
from policies import overlays
from policies.model import PolicySet, Release
from policies.release_state import ReleaseState, overlay_for


@dataclasses.dataclass(frozen=True, slots=True)
class Effective:
    policies: PolicySet  # what reconcile compiles
    overlays: Mapping[str, overlays.Overlay]  # release id → its live overlay
    problems: Mapping[str, str]  # release id → why its overlay could not be applied


def effective_policies(
    files: PolicySet,
    histories: PolicyHistories,
    states: Mapping[str, ReleaseState],
) -> Effective:
    """`files` with rollbacks and the overlay of every release in `states` that still has its
    Release in `files` (a state without one is left out)."""
    base = histories.effective(files)
    specs: dict[str, Release] = {spec.id: spec for spec in files.releases}
    live = {rid: overlay_for(specs[rid], state) for rid, state in states.items() if rid in specs}
    applied, problems = overlays.apply_overlays(base, tuple(live.values()))
    own: dict[str, str] = {}
    if problems:  # which release each problem is about: try its overlay alone
        for release_id, overlay in live.items():
            _, alone = overlays.apply_overlays(base, (overlay,))
            if alone:
                own[release_id] = alone[0].message
    return Effective(applied, live, own)
