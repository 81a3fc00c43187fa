"""What the release runner keeps per started release, and its two JSON forms. No I/O.

`Active` is one started release: the engine's `ReleaseState`, its overlay revisions, its event
journal, the analysis window being measured, and two runtime-only fields about this process's
snapshots. `dump`/`restore` give the state-file entry (in Kubernetes mode: the Release's status);
`view` gives what the operator API and `fleetgate release status` show.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from controller import codec
from controller.published import Rollout
from controller.publishing import Publisher
from controller.rollbacks import PolicyHistories, decode_revision, encode_revision
from controller.statefile import StateFileError
from policies import overlays
from policies.model import Release
from policies.release_state import PauseReason, ReleaseState
from policies.releases import describe_step
from policies.revisions import History


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One entry of a release's journal: who did what, and what the release said after it."""

    at: float
    actor: str
    action: str  # an operator action, or "phase" for the engine's own phase changes
    message: str


@dataclasses.dataclass(slots=True)
class Window:
    """An analysis interval being measured; `baseline` is None until its counters are read."""

    since: float
    until: float
    baseline: dict[str, Any] | None = None


@dataclasses.dataclass(slots=True)
class Active:
    """A started release. `carried` and `applied` are runtime only: they describe this process's
    snapshots, so they start afresh after a restart (and the step waits for the fleet again)."""

    state: ReleaseState
    history: History[overlays.Overlay]
    events: collections.deque[Event]
    window: Window | None = None
    carried: tuple[int, int] | None = None  # (overlay revision, snapshot version serving it)
    applied: int = 0  # newest overlay revision every live gateway serves
    problem: str | None = None  # why the overlay could not be applied to the policies


def new(release_id: str, state: ReleaseState, *, events: int) -> Active:
    return Active(
        state=state,
        history=History(release_id),
        events=collections.deque(maxlen=max(1, events)),
    )


def dump(active: Active) -> dict[str, Any]:
    """The persisted entry: everything but the runtime-only fields."""
    return {
        "state": codec.encode(active.state),
        "window": dataclasses.asdict(active.window) if active.window else None,
        "history": [encode_revision(r) for r in active.history.revisions],
        "events": [codec.encode(e) for e in active.events],
    }


def restore(release_id: str, entry: Mapping[str, Any], *, events: int) -> Active:
    """`dump`'s inverse. Raises ValueError, TypeError or KeyError on a damaged entry."""
    active = new(release_id, codec.decode(ReleaseState, entry["state"]), events=events)
    active.history = History(
        release_id,
        tuple(decode_revision(overlays.Overlay, r) for r in entry.get("history") or ()),
    )
    active.events.extend(codec.decode(Event, e) for e in entry.get("events") or ())
    window = entry.get("window")
    if window:
        active.window = Window(
            since=codec.decode(float, window["since"]),
            until=codec.decode(float, window["until"]),
            baseline=window.get("baseline"),
        )
    return active


def dump_document(active: Mapping[str, Active], policies: PolicyHistories) -> dict[str, Any]:
    """The runner's whole state document (what a `StateStore` saves)."""
    return {
        "releases": {release_id: dump(entry) for release_id, entry in active.items()},
        "policies": policies.dump(),
    }


def restore_releases(document: Mapping[str, Any], *, events: int) -> dict[str, Active]:
    """The started releases of a saved document. Raises StateFileError on a damaged entry."""
    out: dict[str, Active] = {}
    for release_id, entry in (document.get("releases") or {}).items():
        try:
            out[release_id] = restore(release_id, entry, events=events)
        except (KeyError, TypeError, ValueError) as exc:
            raise StateFileError(f"saved state of release {release_id}: {exc}") from exc
    return out


def view(spec: Release, active: Active | None, publisher: Publisher) -> dict[str, Any]:
    """Everything `fleetgate release status` shows, as JSON-able data."""
    out: dict[str, Any] = {
        "release": spec.id,
        "strategy": spec.strategy,
        "target": f"{spec.namespace}/{spec.target}",
        "stable": str(spec.stable.service),
        "canary": str(spec.canary.service),
        "steps": [describe_step(step) for step in spec.steps],
        "started": active is not None,
    }
    if active is None:
        return out
    state = active.state
    config = spec.analysis
    carried = active.carried[1] if active.carried else None
    rollout = publisher.rollout(carried) if carried is not None else None
    out.update(
        phase=state.phase.value,
        pause_reason=state.pause_reason.value if state.pause_reason else None,
        abort_reason=state.abort_reason,
        message=state.message,
        pause_until=_pause_until(spec, state),
        step=state.step_index,
        canary_weight=state.canary_weight,
        header_route=codec.encode(state.header_route),
        mirror_percent=state.mirror_percent,
        preview=state.preview,
        revision=state.revision,
        applied_revision=active.applied,
        snapshot_version=carried,
        rollout=_rollout(rollout),
        gateways=[
            {
                "id": g.id,
                "zone": g.zone,
                "applied": g.applied,
                "live": g.live,
                "checksum": g.checksum,
                "replica": g.replica,
            }
            for g in publisher.gateways()
        ],
        analysis={
            "successes": state.tally.successes,
            "failures": state.tally.failures,
            "inconclusive": state.tally.inconclusive,
            "count": config.count if config else None,
            "failure_limit": config.failure_limit if config else None,
            "source": "prometheus" if config and config.prometheus_address else "gateways",
            "measuring": (
                {"since": active.window.since, "until": active.window.until}
                if active.window
                else None
            ),
            "last": codec.encode(state.tally.last),
        },
        problem=active.problem,
        events=[codec.encode(e) for e in active.events],
    )
    return out


def _pause_until(spec: Release, state: ReleaseState) -> float | None:
    """When a timed pause step ends (epoch seconds), while the release waits in one."""
    if state.pause_reason is not PauseReason.PAUSE_STEP or state.step_applied_at is None:
        return None
    if not 0 <= state.step_index < len(spec.steps):
        return None
    pause_s = spec.steps[state.step_index].pause_s
    if pause_s is None or math.isinf(pause_s):
        return None
    return state.step_applied_at + pause_s


def _rollout(rollout: Rollout | None) -> dict[str, Any] | None:
    if rollout is None:
        return None
    return {
        "version": rollout.version,
        "applied": list(rollout.applied),
        "pending": list(rollout.pending),
        "summary": str(rollout),
    }
