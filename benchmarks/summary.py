"""Per-run records and their summary: ratios to nginx from the same round, medians over rounds,
and the Markdown table. Pure."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Mapping, Sequence

REFERENCE = "nginx"


@dataclasses.dataclass(frozen=True, slots=True)
class RunResult:
    """One wrk run against one config in one round."""

    config: str
    round: int
    requests: int
    duration_s: float
    requests_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    cpu_s: float  # utime+stime of the proxy's whole process tree during the run
    process_cpu_s: Mapping[str, float]  # "pid comm" -> seconds, for per-worker shares
    core_busy_percent: Mapping[int, float]
    core_steal_percent: Mapping[int, float]
    socket_errors: Mapping[str, int]
    non_2xx_3xx: int
    worker_request_shares: Mapping[str, float] | None = None  # from the admin /metrics, if any
    # Busy % of the proxy's cores NOT spent by the proxy: other processes competing with it. High
    # values mean the run measured a shared core (the machine was not quiet); None for `direct`.
    other_load_percent: float | None = None

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values()) + self.non_2xx_3xx

    @property
    def cpu_us_per_request(self) -> float | None:
        return 1e6 * self.cpu_s / self.requests if self.requests else None

    @property
    def cpu_percent(self) -> float:
        return 100.0 * self.cpu_s / self.duration_s if self.duration_s else 0.0


def other_load_percent(
    core_busy_percent: Mapping[int, float], cores: Sequence[int], proxy_cpu_percent: float
) -> float:
    """How much of `cores` was busy with something other than the proxy (never below 0)."""
    return max(0.0, sum(core_busy_percent.get(c, 0.0) for c in cores) - proxy_cpu_percent)


@dataclasses.dataclass(frozen=True, slots=True)
class ConfigSummary:
    config: str
    runs: int
    flagged_runs: int  # runs with socket errors or non-2xx/3xx answers
    median_rps: float
    min_rps: float
    max_rps: float
    rps_ratio: float | None  # this / nginx, same round, median over rounds (higher is better)
    p50_ms: float | None
    p99_ms: float | None
    cpu_us_per_request: float | None
    cpu_ratio: float | None  # this / nginx µs per request, same round, median (lower is better)
    cpu_percent: float
    core_busy_percent: dict[int, float]
    core_steal_percent: dict[int, float]
    peak_rss_mib: float | None
    other_load_percent: float | None
    worker_cpu_shares: dict[str, float] = dataclasses.field(default_factory=dict)
    worker_request_shares: dict[str, float] | None = None


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _same_round_ratios(
    runs: Sequence[RunResult],
    reference: Mapping[int, RunResult],
    value: Callable[[RunResult], float | None],
) -> list[float | None]:
    ratios: list[float | None] = []
    for run in runs:
        ref = reference.get(run.round)
        mine, theirs = value(run), (value(ref) if ref is not None else None)
        ratios.append(mine / theirs if mine is not None and theirs else None)
    return ratios


def _median_by_key(maps: Sequence[Mapping[int, float]]) -> dict[int, float]:
    keys = sorted({k for m in maps for k in m})
    return {k: statistics.median(m[k] for m in maps if k in m) for k in keys}


def _shares(values: Mapping[str, float]) -> dict[str, float]:
    total = sum(values.values())
    return {k: v / total for k, v in values.items()} if total > 0 else {}


def summarize(
    runs: Sequence[RunResult], *, peak_rss_kib: Mapping[str, int] | None = None
) -> list[ConfigSummary]:
    """One summary per config, in first-seen order. Ratios use nginx's run of the SAME round, so
    noise that hits a whole round (steal, a busy neighbour) cancels out before the median."""
    reference = {run.round: run for run in runs if run.config == REFERENCE}
    by_config: dict[str, list[RunResult]] = {}
    for run in runs:
        by_config.setdefault(run.config, []).append(run)
    summaries = []
    for config, mine in by_config.items():
        rps = [run.requests_per_s for run in mine]
        rss = (peak_rss_kib or {}).get(config)
        worker_cpu: dict[str, float] = {}
        for run in mine:
            for proc, share in _shares(run.process_cpu_s).items():
                worker_cpu[proc] = worker_cpu.get(proc, 0.0) + share / len(mine)
        request_shares = [r.worker_request_shares for r in mine if r.worker_request_shares]
        summaries.append(
            ConfigSummary(
                config=config,
                runs=len(mine),
                flagged_runs=sum(1 for run in mine if run.errors),
                median_rps=statistics.median(rps),
                min_rps=min(rps),
                max_rps=max(rps),
                rps_ratio=_median(_same_round_ratios(mine, reference, lambda r: r.requests_per_s)),
                p50_ms=_median([run.p50_ms for run in mine]),
                p99_ms=_median([run.p99_ms for run in mine]),
                cpu_us_per_request=_median([run.cpu_us_per_request for run in mine]),
                cpu_ratio=_median(
                    _same_round_ratios(mine, reference, lambda r: r.cpu_us_per_request)
                ),
                cpu_percent=statistics.median(run.cpu_percent for run in mine),
                core_busy_percent=_median_by_key([run.core_busy_percent for run in mine]),
                core_steal_percent=_median_by_key([run.core_steal_percent for run in mine]),
                peak_rss_mib=rss / 1024 if rss is not None else None,
                other_load_percent=_median([run.other_load_percent for run in mine]),
                worker_cpu_shares=worker_cpu,
                worker_request_shares=(
                    {
                        k: statistics.median(s.get(k, 0.0) for s in request_shares)
                        for k in sorted({k for s in request_shares for k in s})
                    }
                    if request_shares
                    else None
                ),
            )
        )
    return summaries


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown_table(summaries: Sequence[ConfigSummary]) -> str:
    head = (
        "| config | median req/s | min-max req/s | req/s vs nginx (same round) | p50 ms | p99 ms "
        "| CPU µs/req | CPU/req vs nginx | proxy CPU % | peak RSS MiB | core busy % | steal % "
        "| other load on proxy core % | flagged runs |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for s in summaries:
        busy = " / ".join(f"{v:.0f}" for v in s.core_busy_percent.values())
        steal = " / ".join(f"{v:.0f}" for v in s.core_steal_percent.values())
        rows.append(
            f"| {s.config} | {s.median_rps:,.0f} | {s.min_rps:,.0f}-{s.max_rps:,.0f} "
            f"| {_fmt(s.rps_ratio, '.2f')} | {_fmt(s.p50_ms, '.2f')} | {_fmt(s.p99_ms, '.2f')} "
            f"| {_fmt(s.cpu_us_per_request, '.1f')} | {_fmt(s.cpu_ratio, '.2f')} "
            f"| {s.cpu_percent:.0f} | {_fmt(s.peak_rss_mib, '.1f')} | {busy} | {steal} "
            f"| {_fmt(s.other_load_percent, '.0f')} | {s.flagged_runs}/{s.runs} |"
        )
    return "\n".join(rows)


def worker_lines(summaries: Sequence[ConfigSummary]) -> list[str]:
    """Per-process shares for multi-process proxies: CPU always, requests when /metrics had them."""
    lines = []
    for s in summaries:
        # A master process that only supervises (nginx's) stays under 1 %: not a worker.
        busy = {k: v for k, v in s.worker_cpu_shares.items() if v >= 0.01}
        if len(busy) > 1:
            cpu = ", ".join(f"{k} {v:.0%}" for k, v in busy.items())
            lines.append(f"- {s.config}: CPU share by process: {cpu}")
        if s.worker_request_shares:
            req = ", ".join(f"worker {k} {v:.0%}" for k, v in s.worker_request_shares.items())
            lines.append(f"- {s.config}: request share by worker (admin /metrics): {req}")
    return lines
