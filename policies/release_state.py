"""Release state and actions as plain data: what the controller persists and performs. Pure.

`policies.releases` makes every decision; this module only names its inputs and outputs, so the
controller's state file (or the Release's status), the operator API and the CLI can read a
release without importing the engine. Reason codes are stable snake_case strings: they end up in
status conditions, events, webhook payloads and CLI output.
"""

from __future__ import annotations

import dataclasses
import enum

from policies import analysis, overlays, revisions
from policies.model import HeaderRoute, Release

CONTROLLER = "controller"  # the actor of automatic changes


class Phase(enum.Enum):
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    COMPLETED = "Completed"
    ABORTED = "Aborted"


class PauseReason(enum.StrEnum):
    PAUSE_STEP = "pause_step"  # a pause step: ends on its timer, or on promote
    OPERATOR = "operator_pause"
    MANUAL_WEIGHT = "manual_weight"  # set_weight pauses the automation
    INCONCLUSIVE = "inconclusive_analysis"
    PREVIEW = "blue_green_preview"  # blue-green waits for promote
    NO_ANALYSIS = "analysis_not_configured"  # an analysis step without spec.analysis


RESUMABLE = frozenset({PauseReason.OPERATOR, PauseReason.MANUAL_WEIGHT, PauseReason.INCONCLUSIVE})

OPERATOR_ABORT = "operator_abort"
ANALYSIS_FAILED = "analysis_failed"


@dataclasses.dataclass(frozen=True, slots=True)
class Tally:
    """Measurements of the current analysis step (Argo's AnalysisRun counters)."""

    successes: int = 0
    failures: int = 0
    inconclusive: int = 0
    window_start: float | None = None  # the interval being measured; None = not measuring
    last: analysis.Measurement | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ReleaseState:
    phase: Phase
    step_index: int = 0  # len(spec.steps) once completed
    canary_weight: int = 0  # live canary percent
    header_route: HeaderRoute | None = None
    mirror_percent: float = 0.0
    preview: bool = False  # blue-green preview header/hostname live
    revision: int = 0  # overlay revision; +1 on every change of the four fields above
    step_entered_at: float = 0.0
    step_applied_at: float | None = None  # when the fleet first served this step's overlay
    tally: Tally = Tally()
    pause_reason: PauseReason | None = None
    abort_reason: str | None = None  # OPERATOR_ABORT | ANALYSIS_FAILED
    abort_ramp: tuple[int, ...] = ()  # canary weights still to come while aborting
    message: str = ""  # what the release is doing or waiting for, for status output


@dataclasses.dataclass(frozen=True, slots=True)
class SetOverlay:
    """Publish this overlay to every gateway and record it in the release's history."""

    revision: revisions.Revision[overlays.Overlay]

    @property
    def overlay(self) -> overlays.Overlay:
        return self.revision.content


@dataclasses.dataclass(frozen=True, slots=True)
class RunAnalysis:
    """Measure canary and stable over [since, until]; pass the observation to `advance` on the
    first tick at or after `until` (counter deltas, or Prometheus queried at `until`). When the
    source cannot answer, pass empty samples: that is inconclusive and pauses, never a pass."""

    release: str
    since: float
    until: float


@dataclasses.dataclass(frozen=True, slots=True)
class Notify:
    """Phase or reason changed: status conditions, events, the optional webhook."""

    release: str
    phase: Phase
    previous: Phase | None
    reason: str  # pause or abort reason code, or the phase name in snake_case
    message: str
    at: float


Action = SetOverlay | RunAnalysis | Notify


@dataclasses.dataclass(frozen=True, slots=True)
class Transition:
    state: ReleaseState
    actions: tuple[Action, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Refused:
    reason: str  # snake_case: release_completed, release_aborted, not_paused, ...
    message: str


def overlay_for(spec: Release, state: ReleaseState) -> overlays.Overlay:
    """The live split this state stands for."""
    return overlays.Overlay(
        release=spec.id,
        route=f"{spec.namespace}/{spec.target}",
        stable=spec.stable,
        canary=spec.canary,
        revision=state.revision,
        canary_weight=state.canary_weight,
        header_route=state.header_route,
        mirror_percent=state.mirror_percent,
        preview_header=spec.preview_header if state.preview else None,
        preview_hostname=spec.preview_hostname if state.preview else None,
        sticky=spec.sticky,
    )
