"""Text rendering of the operator API's release, history and rollback answers. No I/O (it reads
the clock, for "in 4m10s").

Plain ASCII so the output survives any terminal, pipe or CI log: the live weight is a bar of `#`
out of `-`, steps are marked `[x]` done, `[>]` current, `[ ]` to come. Times are UTC, as the
controller and its logs may sit in another time zone than the operator.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

BAR_WIDTH = 40


def bar(percent: float, width: int = BAR_WIDTH) -> str:
    filled = round(width * max(0.0, min(100.0, percent)) / 100)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def finished(view: Mapping[str, Any]) -> bool:
    """Whether `status --watch` can stop: completed, or aborted with the ramp-down done, and
    in either case served by the whole fleet."""
    phase = view.get("phase")
    final = phase == "Completed" or (phase == "Aborted" and view.get("canary_weight") == 0)
    return final and view.get("applied_revision") == view.get("revision")


def status(view: Mapping[str, Any], *, now: float | None = None) -> str:
    """`now` (epoch seconds; default: the clock) is for the time left in a timed pause."""
    lines = [
        f"release {view['release']}  ({view['strategy']}, route {view['target']}: "
        f"{view['stable']} -> {view['canary']})"
    ]
    if not view.get("started"):
        lines.append("phase:    not started (fleetgate release start)")
        lines.extend(_steps(view, None))
        return "\n".join(lines)
    reason = view.get("pause_reason") or view.get("abort_reason")
    lines.append(f"phase:    {view['phase']}" + (f" ({reason})" if reason else ""))
    if view.get("message"):
        lines.append(f"          {view['message']}")
    if view.get("pause_until") is not None:
        left = view["pause_until"] - (time.time() if now is None else now)
        lines.append(f"          resumes at {_clock(view['pause_until'])} (in {duration(left)})")
    weight = view.get("canary_weight", 0)
    lines.append(f"weight:   {bar(weight)} {weight:3d}% canary")
    extras = []
    if view.get("header_route"):
        route = view["header_route"]
        name = route.get("header") or f"cookie {route.get('cookie')}"
        extras.append(f"header route {name}={route.get('value')}")
    if view.get("mirror_percent"):
        extras.append(f"mirror {view['mirror_percent']:g}%")
    if view.get("preview"):
        extras.append("preview live")
    if extras:
        lines.append("          " + ", ".join(extras))
    lines.extend(_steps(view, view.get("step")))
    lines.extend(_analysis(view.get("analysis") or {}))
    lines.extend(_fleet(view))
    if view.get("problem"):
        lines.append(f"problem:  {view['problem']}")
    return "\n".join(lines)


def _steps(view: Mapping[str, Any], current: int | None) -> list[str]:
    steps = view.get("steps") or []
    if not steps:
        return []
    out = ["steps:"]
    for index, text in enumerate(steps):
        if current is None or index > current:
            mark = "[ ]"
        elif index < current or view.get("phase") == "Completed":
            mark = "[x]"
        else:
            mark = "[>]"
        out.append(f"  {mark} {index + 1}. {text}")
    return out


def _analysis(data: Mapping[str, Any]) -> list[str]:
    if not data or data.get("count") is None:
        return []
    line = (
        f"analysis: {data['successes']} passed, {data['failures']} failed, "
        f"{data['inconclusive']} inconclusive (of {data['count']}; failure limit "
        f"{data['failure_limit']}; source {data.get('source')})"
    )
    out = [line]
    if data.get("measuring"):
        out.append(f"          measuring until {_clock(data['measuring']['until'])}")
    last = data.get("last")
    if last:
        out.append(f"          last: {last['verdict']} ({last['reason']}): {last['message']}")
    return out


def _fleet(view: Mapping[str, Any]) -> list[str]:
    rollout = view.get("rollout")
    applied = view.get("applied_revision")
    out = [f"revision: {view.get('revision')} (applied by the whole fleet: {applied})"]
    if rollout:
        out.append(f"snapshot: {rollout['summary']}")
    version = rollout["version"] if rollout else None
    gateways = view.get("gateways") or []
    if gateways:
        out.append("gateways:")
    for gateway in gateways:
        done = version is not None and gateway["applied"] >= version
        state = "serves this step" if done else "behind"
        live = "" if gateway.get("live", True) else " (not live)"
        applied = f"v{gateway['applied']}"
        if not gateway["applied"] and gateway.get("checksum"):
            # another replica's gateway, on content the leader never published (or forgot)
            applied = f"sha:{gateway['checksum'][:12]}"
        where = f" (via {gateway['replica']})" if gateway.get("replica") else ""
        out.append(f"  {gateway['id']:<24} {applied:<17} {state}{live}{where}")
    return out


def listing(data: Mapping[str, Any]) -> str:
    releases = data.get("releases") or []
    if not releases:
        return "no releases"
    rows = [("RELEASE", "PHASE", "STEP", "WEIGHT", "MESSAGE")]
    for view in releases:
        if not view.get("started"):
            rows.append((view["release"], "-", "-", "-", "not started"))
            continue
        total = len(view.get("steps") or [])
        step = f"{min(view['step'] + 1, total)}/{total}" if total else "-"
        rows.append(
            (
                view["release"],
                view["phase"],
                step,
                f"{view['canary_weight']}%",
                view.get("message", ""),
            )
        )
    return _table(rows)


def history(data: Mapping[str, Any]) -> str:
    revisions = data.get("revisions") or []
    if not revisions:
        return f"{data.get('subject')}: no revisions yet"
    rows = [("REVISION", "TIME", "ACTOR", "REASON")]
    for revision in revisions:
        reason = revision["reason"]
        content = revision.get("content")
        if isinstance(content, dict) and "canary_weight" in content:
            reason += f" [canary {content['canary_weight']}%]"
        rows.append((str(revision["number"]), _clock(revision["at"]), revision["actor"], reason))
    out = _table(rows)
    if data.get("rolled_back"):
        out += "\n(the latest revision is a rollback layered over the policy files)"
    return out


def after_action(action: str, view: Mapping[str, Any]) -> str:
    weight = view.get("canary_weight", 0)
    return f"{view['release']}: {action} accepted; {view.get('phase')}, canary {weight}%" + (
        f"; {view['message']}" if view.get("message") else ""
    )


def after_rollback(answer: Mapping[str, Any], target: int) -> str:
    how = (
        "layered over the policy files until they change"
        if answer.get("rolled_back")
        else "the same as the policy files, so no override remains"
    )
    return (
        f"policy {answer['policy']}: revision {target} is live again as revision "
        f"{answer['revision']} ({how})"
    )


def _clock(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def duration(seconds: float) -> str:
    """`1h02m`, `4m10s`, `9s`; never negative (a pause that is over is `0s`)."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
