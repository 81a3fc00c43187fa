"""Build a `Release` from a checked Release spec. Pure.

`pause: {}` waits until promoted (`Step.pause_s` is math.inf); `pause: {duration: 30s}` waits 30 s.
An `analysis` block without `successRate` keeps the model's default minimum (0.99): a release is
never judged on latency alone unless the author says `successRate: {min: 0}`.
"""

from __future__ import annotations

import dataclasses
import math

from policies.loading_routes import backend_ref
from policies.model import (
    Analysis,
    BackendRef,
    HeaderRoute,
    Origin,
    Release,
    ServiceRef,
    Step,
    ValueKind,
)
from policies.reading import Fields, Reader

_RAMP_INTERVAL_S = next(
    float(f.default)  # type: ignore[arg-type]  # the model declares it a float
    for f in dataclasses.fields(Release)
    if f.name == "abort_ramp_interval_s"
)


def build_release(
    reader: Reader, spec: Fields, *, namespace: str, name: str, origin: Origin
) -> Release:
    strategy = spec.obj("strategy")
    canary = strategy.obj("canary") if strategy else None
    blue_green = strategy.obj("blueGreen") if strategy else None
    abort = spec.obj("abort")
    return Release(
        namespace=namespace,
        name=name,
        target=spec.text("target"),
        stable=_side(reader, spec.obj("stable"), namespace),
        canary=_side(reader, spec.obj("canary"), namespace),
        strategy="BlueGreen" if blue_green else "Canary",
        steps=tuple(_step(step) for step in canary.objs("steps")) if canary else (),
        analysis=_analysis(spec.obj("analysis")),
        sticky=canary.flag("stickiness") if canary else False,
        preview_header=_header_route(blue_green.obj("previewHeader")) if blue_green else None,
        preview_hostname=blue_green.opt_text("previewHostname") if blue_green else None,
        abort_ramp_steps=tuple(abort.integers("rampSteps")) if abort else (),
        abort_ramp_interval_s=abort.number("rampInterval", _RAMP_INTERVAL_S)
        if abort
        else _RAMP_INTERVAL_S,
        origin=origin,
    )


def _side(reader: Reader, side: Fields | None, namespace: str) -> BackendRef:
    ref = side.obj("backendRef") if side else None
    if ref is None:  # missing: already reported
        return BackendRef(ServiceRef(namespace, "", 0))
    return backend_ref(reader, ref, namespace)


def _step(step: Fields) -> Step:
    pause = step.obj("pause")
    header = step.obj("setHeaderRoute")
    routes = header.objs("match") if header else []
    mirror = step.obj("setMirror")
    return Step(
        set_weight=step.opt_integer("setWeight"),
        pause_s=pause.number("duration", math.inf) if pause else None,
        set_header_route=_header_route(routes[0]) if routes else None,
        set_mirror_percent=mirror.opt_number("percent") if mirror else None,
        analysis=step.has("analysis"),
    )


def _header_route(f: Fields | None) -> HeaderRoute | None:
    if f is None:
        return None
    header = f.opt_text("headerName")
    value = f.obj("headerValue" if header is not None else "cookieValue")
    regex = value is not None and value.has("regex")
    text = (value.text("regex") if regex else value.text("exact")) if value else ""
    kind = ValueKind.REGEX if regex else ValueKind.EXACT
    if header is not None:
        return HeaderRoute(header=header.lower(), value=text, kind=kind)
    return HeaderRoute(cookie=f.text("cookieName"), value=text, kind=kind)


def _analysis(f: Fields | None) -> Analysis | None:
    if f is None:
        return None
    d = Analysis()
    success = f.obj("successRate")
    latency = f.obj("latency")
    prometheus = f.obj("prometheus")
    return Analysis(
        interval_s=f.number("interval", d.interval_s),
        count=f.integer("count", d.count),
        failure_limit=f.integer("failureLimit", d.failure_limit),
        min_requests=f.integer("minRequests", d.min_requests),
        min_success_rate=success.number("min") if success else d.min_success_rate,
        max_latency_p99_s=latency.opt_number("p99") if latency else None,
        max_success_rate_drop=f.opt_number("maxSuccessRateDrop"),
        prometheus_address=prometheus.opt_text("address") if prometheus else None,
        prometheus_query=prometheus.opt_text("query") if prometheus else None,
    )
