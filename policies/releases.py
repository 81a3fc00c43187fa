"""Releases as a pure state machine: (spec, state, now, applied, observation) → (state, actions).

The controller owns the clock, the gateways and the metrics; this module owns every decision.
`advance` is the release loop's tick; `start`, `promote`, `promote_full`, `pause`, `resume`,
`abort`, `retry` and `set_weight` are the operator's actions. Each returns a `Transition` (new
state plus actions for the controller to perform, in order) or, for an operator action that does
not apply in the current phase, `Refused` with a reason code and a sentence. Those types live in
`policies.release_state`.

Vocabulary and semantics follow Argo Rollouts (phases Progressing / Paused / Completed / Aborted;
steps setWeight, pause, setHeaderRoute, setMirror, analysis; promote skips the current step,
promote --full skips them all; abort returns traffic to stable; retry starts again from step 0).
Where fleetgate differs, it is on purpose:

* A step counts as applied only when every gateway serves its overlay: the controller passes
  `applied_revision`, the oldest overlay revision any gateway has applied. Pause timers and
  analysis windows start then, not when the controller made the change.
* An inconclusive measurement (too little traffic) pauses the release for a person; it is never a
  pass. Measurements made while paused do not count.
* Abort may ramp down through `spec.abort_ramp_steps` (canary weights, each held for
  `abort_ramp_interval_s` once applied; 0 ends it), answering argo-rollouts #3888. Blue-green
  always returns at once. An abort is also accepted after completion: stable is still warm.
* A completed release keeps canary at 100 % until the operator makes canary the stable in their
  own YAML and removes the Release; the controller never edits their documents.

`now` is wall-clock seconds (state is persisted and must survive a controller restart).
"""

from __future__ import annotations

import dataclasses
import datetime
import math

from policies import analysis, revisions
from policies.model import Release, Step, ValueKind
from policies.release_state import (
    ANALYSIS_FAILED,
    CONTROLLER,
    OPERATOR_ABORT,
    RESUMABLE,
    Action,
    Notify,
    PauseReason,
    Phase,
    Refused,
    ReleaseState,
    RunAnalysis,
    SetOverlay,
    Tally,
    Transition,
    overlay_for,
)

# ---------------------------------------------------------------------------------------------
# The tick


def advance(
    spec: Release,
    state: ReleaseState,
    *,
    now: float,
    applied_revision: int,
    observation: analysis.Observation | None = None,
) -> Transition:
    """Move as far as the fleet and the clock allow: possibly through several steps at once
    (steps that change nothing the fleet has not applied yet complete immediately)."""
    change = _Change(spec, state, now=now, actor=CONTROLLER)
    if state.phase is Phase.ABORTED:
        _ramp_down(change, applied_revision)
    elif state.phase is not Phase.COMPLETED:
        while True:  # ends: each pass either breaks or moves to a later step (or completes)
            index = change.state.step_index
            if change.state.phase is Phase.COMPLETED or not _applied(change, applied_revision):
                break
            _run_step(change, observation)
            observation = None  # one observation is one interval
            if change.state.step_index == index:
                break
    return change.transition()


def _applied(change: _Change, applied_revision: int) -> bool:
    """Whether the whole fleet serves the live overlay; notes when it first did. (The controller
    shows who is still behind: it knows each gateway's applied version.)"""
    if applied_revision < change.state.revision:
        return False
    if change.state.step_applied_at is None:
        change.update(step_applied_at=change.now)
    return True


def _run_step(change: _Change, observation: analysis.Observation | None) -> None:
    spec, state, now = change.spec, change.state, change.now
    if spec.strategy == "BlueGreen" or (
        state.phase is Phase.PAUSED and state.pause_reason is not PauseReason.PAUSE_STEP
    ):
        return
    step = spec.steps[state.step_index]
    applied_at = state.step_applied_at
    assert applied_at is not None  # _applied() ran first
    if step.pause_s is not None:
        if now >= applied_at + step.pause_s:
            _enter(change, state.step_index + 1)
        else:
            until = "promoted" if math.isinf(step.pause_s) else _utc(applied_at + step.pause_s)
            change.update(
                phase=Phase.PAUSED,
                pause_reason=PauseReason.PAUSE_STEP,
                message=f"step {state.step_index + 1}: paused until {until}",
            )
    elif step.analysis:
        _analyse(change, observation)
    else:
        _enter(change, state.step_index + 1)


def _analyse(change: _Change, observation: analysis.Observation | None) -> None:
    spec, state, now = change.spec, change.state, change.now
    config = spec.analysis
    if config is None:
        change.update(
            phase=Phase.PAUSED,
            pause_reason=PauseReason.NO_ANALYSIS,
            message="analysis step without spec.analysis: promote to skip it",
        )
        return
    tally = state.tally
    if tally.window_start is None:
        _start_window(change)
        return
    if now < tally.window_start + config.interval_s or observation is None:
        return
    measured = analysis.judge(config, observation)
    tally = dataclasses.replace(
        tally,
        successes=tally.successes + (measured.verdict is analysis.Verdict.PASS),
        failures=tally.failures + (measured.verdict is analysis.Verdict.FAIL),
        inconclusive=tally.inconclusive + (measured.verdict is analysis.Verdict.INCONCLUSIVE),
        window_start=None,
        last=measured,
    )
    change.update(tally=tally)
    if tally.failures > config.failure_limit:
        _abort(change, ANALYSIS_FAILED, f"analysis failed: {measured.message}", immediate=False)
    elif measured.verdict is analysis.Verdict.INCONCLUSIVE:
        change.update(
            phase=Phase.PAUSED,
            pause_reason=PauseReason.INCONCLUSIVE,
            message=f"analysis inconclusive: {measured.message}; resume or promote",
        )
    elif tally.successes + tally.failures >= config.count:
        _enter(change, state.step_index + 1)
    else:
        _start_window(change)


def _start_window(change: _Change) -> None:
    config = change.spec.analysis
    assert config is not None
    tally = dataclasses.replace(change.state.tally, window_start=change.now)
    done = change.state.tally.successes + change.state.tally.failures
    change.update(
        tally=tally,
        message=f"step {change.state.step_index + 1}: measuring {done + 1}/{config.count}",
    )
    change.actions.append(
        RunAnalysis(change.spec.id, since=change.now, until=change.now + config.interval_s)
    )


def _ramp_down(change: _Change, applied_revision: int) -> None:
    state = change.state
    if not state.abort_ramp or not _applied(change, applied_revision):
        return
    applied_at = change.state.step_applied_at
    assert applied_at is not None
    if change.now >= applied_at + change.spec.abort_ramp_interval_s:
        weight, *rest = state.abort_ramp
        change.overlay(
            f"abort ramp: canary weight {weight}",
            canary_weight=weight,
            abort_ramp=tuple(rest),
            step_entered_at=change.now,
            step_applied_at=None,
            message=f"aborting: canary weight {weight}",
        )


# ---------------------------------------------------------------------------------------------
# Operator actions


def start(spec: Release, *, now: float, actor: str = CONTROLLER) -> Transition:
    """A new release: enter the first step (canary) or the preview (blue-green)."""
    change = _Change(spec, ReleaseState(phase=Phase.PROGRESSING), now=now, actor=actor)
    change.previous = None
    _begin(change)
    return change.transition()


def promote(spec: Release, state: ReleaseState, *, now: float, actor: str) -> Transition | Refused:
    """Skip the current step (a pause, an analysis, a manual weight); blue-green: switch over."""
    refused = _refuse_finished(state)
    if refused is not None:
        return refused
    change = _Change(spec, state, now=now, actor=actor)
    if spec.strategy == "BlueGreen":
        _complete(change, "promoted")
    else:
        _enter(change, state.step_index + 1)
    return change.transition()


def promote_full(
    spec: Release, state: ReleaseState, *, now: float, actor: str
) -> Transition | Refused:
    """Skip every remaining step and analysis: canary takes all traffic now."""
    refused = _refuse_finished(state)
    if refused is not None:
        return refused
    change = _Change(spec, state, now=now, actor=actor)
    _complete(change, "promoted fully")
    return change.transition()


def pause(spec: Release, state: ReleaseState, *, now: float, actor: str) -> Transition | Refused:
    """Hold the release where it is (a timed pause step no longer ends on its timer)."""
    refused = _refuse_finished(state)
    if refused is not None:
        return refused
    if state.phase is Phase.PAUSED and state.pause_reason is not PauseReason.PAUSE_STEP:
        return Refused(
            "already_paused", f"release {spec.id} is already paused ({state.pause_reason})"
        )
    change = _Change(spec, state, now=now, actor=actor)
    change.update(
        phase=Phase.PAUSED,
        pause_reason=PauseReason.OPERATOR,
        tally=dataclasses.replace(state.tally, window_start=None),
        message=f"paused by {actor}",
    )
    return change.transition()


def resume(spec: Release, state: ReleaseState, *, now: float, actor: str) -> Transition | Refused:
    """Continue after an operator pause, a manual weight or an inconclusive measurement. Pause
    steps and the blue-green preview end on promote instead."""
    if state.phase is not Phase.PAUSED:
        return Refused("not_paused", f"release {spec.id} is {state.phase.value}, not paused")
    if state.pause_reason not in RESUMABLE:
        return Refused("use_promote", f"release {spec.id} waits for promote ({state.pause_reason})")
    change = _Change(spec, state, now=now, actor=actor)
    if spec.steps[state.step_index].pause_s is not None:  # only canary pauses are resumable
        change.update(pause_reason=PauseReason.PAUSE_STEP, message=f"resumed by {actor}")
    else:
        change.update(
            phase=Phase.PROGRESSING,
            pause_reason=None,
            tally=dataclasses.replace(state.tally, window_start=None),
            message=f"resumed by {actor}",
        )
    return change.transition()


def abort(
    spec: Release, state: ReleaseState, *, now: float, actor: str, immediate: bool = False
) -> Transition | Refused:
    """Send traffic back to stable: at once, or down `spec.abort_ramp_steps`. An abort of an
    aborting release with `immediate` skips the rest of the ramp."""
    if state.phase is Phase.ABORTED:
        if immediate and state.abort_ramp:
            change = _Change(spec, state, now=now, actor=actor)
            change.overlay(
                "abort at once", canary_weight=0, abort_ramp=(), message=f"aborted by {actor}"
            )
            return change.transition()
        return Refused("already_aborted", f"release {spec.id} is already aborted")
    change = _Change(spec, state, now=now, actor=actor)
    _abort(change, OPERATOR_ABORT, f"aborted by {actor}", immediate=immediate)
    return change.transition()


def retry(spec: Release, state: ReleaseState, *, now: float, actor: str) -> Transition | Refused:
    """Start an aborted release again from its first step."""
    if state.phase is not Phase.ABORTED:
        return Refused(
            "not_aborted",
            f"release {spec.id} is {state.phase.value}; only an aborted release is retried",
        )
    change = _Change(spec, state, now=now, actor=actor)
    change.update(abort_reason=None, abort_ramp=(), tally=Tally())
    _begin(change)
    return change.transition()


def set_weight(
    spec: Release, state: ReleaseState, *, weight: int, now: float, actor: str
) -> Transition | Refused:
    """Set the canary weight by hand; the automation pauses until resume or promote."""
    refused = _refuse_finished(state)
    if refused is not None:
        return refused
    if spec.strategy == "BlueGreen":
        return Refused("blue_green_has_no_weights", "blue-green switches at once: promote or abort")
    if not 0 <= weight <= 100:
        return Refused("weight_out_of_range", f"weight must be 0..100, got {weight}")
    change = _Change(spec, state, now=now, actor=actor)
    change.overlay(
        f"weight {weight} set by hand",
        canary_weight=weight,
        phase=Phase.PAUSED,
        pause_reason=PauseReason.MANUAL_WEIGHT,
        tally=dataclasses.replace(state.tally, window_start=None),
        message=f"canary weight {weight} set by {actor}; resume or promote to continue",
    )
    return change.transition()


def _refuse_finished(state: ReleaseState) -> Refused | None:
    if state.phase is Phase.COMPLETED:
        return Refused("release_completed", "the release is completed; abort to go back to stable")
    if state.phase is Phase.ABORTED:
        return Refused("release_aborted", "the release is aborted; retry it first")
    return None


# ---------------------------------------------------------------------------------------------
# Shared moves


def _begin(change: _Change) -> None:
    if change.spec.strategy == "BlueGreen":
        change.overlay(
            "blue-green preview",
            canary_weight=0,
            preview=True,
            step_index=0,
            step_entered_at=change.now,
            step_applied_at=None,
            phase=Phase.PAUSED,
            pause_reason=PauseReason.PREVIEW,
            message="preview is live; promote to switch all traffic",
        )
    else:
        _enter(change, 0)


def _enter(change: _Change, index: int) -> None:
    spec = change.spec
    if index >= len(spec.steps):
        _complete(change, "all steps done")
        return
    step = spec.steps[index]
    fields: dict[str, object] = {}
    if step.set_weight is not None:
        fields["canary_weight"] = step.set_weight
    if step.set_header_route is not None:
        route = step.set_header_route
        fields["header_route"] = route if route.header or route.cookie else None
    if step.set_mirror_percent is not None:
        fields["mirror_percent"] = step.set_mirror_percent
    change.overlay(
        f"step {index + 1}/{len(spec.steps)}: {describe_step(step)}",
        step_index=index,
        step_entered_at=change.now,
        step_applied_at=None,
        phase=Phase.PROGRESSING,
        pause_reason=None,
        tally=Tally(),
        message=f"step {index + 1}/{len(spec.steps)}: {describe_step(step)}",
        **fields,
    )


def _complete(change: _Change, why: str) -> None:
    change.overlay(
        why,
        canary_weight=100,
        header_route=None,
        mirror_percent=0.0,
        preview=False,
        step_index=len(change.spec.steps),
        step_entered_at=change.now,
        step_applied_at=None,
        phase=Phase.COMPLETED,
        pause_reason=None,
        message=f"completed ({why}): canary serves all traffic",
    )


def _abort(change: _Change, reason: str, message: str, *, immediate: bool) -> None:
    spec, state = change.spec, change.state
    weights: list[int] = []
    if not immediate and spec.strategy != "BlueGreen":
        for weight in spec.abort_ramp_steps:
            if weight < (weights[-1] if weights else state.canary_weight):
                weights.append(weight)
    if not weights or weights[-1] != 0:
        weights.append(0)
    change.overlay(
        f"abort ({reason})",
        canary_weight=weights[0],
        header_route=None,
        mirror_percent=0.0,
        preview=False,
        abort_ramp=tuple(weights[1:]),
        step_entered_at=change.now,
        step_applied_at=None,
        phase=Phase.ABORTED,
        pause_reason=None,
        abort_reason=reason,
        message=message,
    )


def describe_step(step: Step) -> str:
    """A step as one phrase: the Release status message and the CLI's step list both use it."""
    if step.set_weight is not None:
        return f"setWeight {step.set_weight}"
    if step.pause_s is not None:
        return "pause" if math.isinf(step.pause_s) else f"pause {step.pause_s:g}s"
    if step.set_header_route is not None:
        route = step.set_header_route
        if route.header is None and route.cookie is None:
            return "setHeaderRoute (removed)"
        name = route.header or f"cookie {route.cookie}"
        op = "=" if route.kind is ValueKind.EXACT else "~"
        return f"setHeaderRoute {name}{op}{route.value}"
    if step.set_mirror_percent is not None:
        return f"setMirror {step.set_mirror_percent:g}%"
    return "analysis" if step.analysis else "empty step"


_OVERLAY_FIELDS = ("canary_weight", "header_route", "mirror_percent", "preview")


class _Change:
    """Accumulates one call's state edits and actions; `transition()` adds the Notify."""

    def __init__(self, spec: Release, state: ReleaseState, *, now: float, actor: str) -> None:
        self.spec, self.state, self.now, self.actor = spec, state, now, actor
        self.before = state
        self.previous: Phase | None = state.phase
        self.actions: list[Action] = []

    def update(self, **fields: object) -> None:
        self.state = dataclasses.replace(self.state, **fields)  # type: ignore[arg-type]

    def overlay(self, reason: str, **fields: object) -> None:
        """Edit the state; when the live split changed, bump the revision and publish it."""
        old = self.state
        self.update(**fields)
        if any(getattr(old, f) != getattr(self.state, f) for f in _OVERLAY_FIELDS):
            self.update(revision=old.revision + 1)
            content = overlay_for(self.spec, self.state)
            revision = revisions.Revision(
                self.state.revision, self.now, self.actor, reason, content
            )
            self.actions.append(SetOverlay(revision))

    def transition(self) -> Transition:
        before, after = self.before, self.state
        status = (after.phase, after.pause_reason, after.abort_reason)
        if self.previous is None or status != (
            before.phase,
            before.pause_reason,
            before.abort_reason,
        ):
            reason = after.pause_reason or after.abort_reason or after.phase.value.lower()
            self.actions.append(
                Notify(self.spec.id, after.phase, self.previous, reason, after.message, self.now)
            )
        return Transition(after, tuple(self.actions))


def _utc(at: float) -> str:
    """A wall-clock instant as operators read it in status output (RFC 3339, UTC)."""
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
