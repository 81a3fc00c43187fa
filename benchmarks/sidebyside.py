"""Side-by-side proxy benchmark on loopback: nginx, HAProxy and fleetgate in front of the same
nginx backend, driven by wrk in interleaved rounds; writes JSON and prints a Markdown table.

Runs processes (apt-get when tools are missing, nginx, haproxy, fleetgate, wrk), reads /proc, and
sends traffic to 127.0.0.1 only. Method: the load generator and the backend share core 0, each
proxy is pinned to core 1; every config gets a warm-up, then each round runs every config once
in a rotated order with gaps; ratios to nginx come from the same round, medians over rounds.

    python benchmarks/sidebyside.py --rounds 5 --duration 10 --connections 50 --routes 100

`--resilience` runs the same comparison with the resilience features on: fleetgate with active
health checks, outlier detection and retries (benchmarks/route_table.py), HAProxy with active
health checks; nginx already retries and marks failing servers by default.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import procstat, servers
from benchmarks.install import ensure_tools
from benchmarks.processes import ServerFailed, Supervisor, free_port, wait_ready
from benchmarks.summary import (
    RunResult,
    markdown_table,
    other_load_percent,
    summarize,
    worker_lines,
)
from benchmarks.worker_metrics import worker_shares
from benchmarks.wrk_report import WrkOutputError, parse_wrk

PROXIES = ("nginx", "haproxy", "fleetgate")
CONFIGS = ("direct", *PROXIES)  # direct = wrk straight to the backend, for context only
WARMUP_S = 2
GAP_S = 1.0
BACKEND_CPUS = LOAD_CPUS = "0"


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    rounds: int
    duration_s: int
    connections: int
    routes: int
    workers: int
    access_log: bool
    only: tuple[str, ...]
    out: Path
    proxy_cpus: str

    @property
    def proxy_cores(self) -> list[int]:
        """`proxy_cpus` as core numbers ("1", "0,1", "0-1" taskset lists)."""
        cores: list[int] = []
        for part in self.proxy_cpus.split(","):
            low, _, high = part.partition("-")
            cores.extend(range(int(low), int(high or low) + 1))
        return cores

    fleetgate_command: list[str]
    worker_metric: str
    worker_label: str
    scratch: Path | None  # keep configs and logs here instead of a temporary directory
    resilience: bool = False  # health checks, outlier detection and retries on


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--routes", type=int, default=100, help="size of fleetgate's table")
    parser.add_argument(
        "--workers", type=int, default=1, help="nginx workers, HAProxy threads, fleetgate workers"
    )
    parser.add_argument("--access-log", action="store_true", help="every proxy logs to a file")
    parser.add_argument(
        "--resilience",
        action="store_true",
        help="health checks, outlier detection and retries on (fleetgate; HAProxy checks)",
    )
    parser.add_argument(
        "--only", default=",".join(PROXIES), help=f"comma list from {', '.join(CONFIGS)}"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    parser.add_argument("--proxy-cpus", default="1", help="taskset list for the proxies")
    parser.add_argument(
        "--fleetgate-command",
        default=None,
        help="how to invoke fleetgate (default: this Python with -m fleetgate)",
    )
    parser.add_argument("--worker-metric", default="fleetgate_requests_total")
    parser.add_argument("--worker-label", default="worker")
    parser.add_argument(
        "--scratch", type=Path, default=None, help="keep configs and server logs in this directory"
    )
    args = parser.parse_args(argv)
    only = tuple(name.strip() for name in args.only.split(",") if name.strip())
    unknown = sorted(set(only) - set(CONFIGS))
    if unknown or not only:
        parser.error(f"--only takes names from {', '.join(CONFIGS)}; got {args.only!r}")
    for name, value, low, high in (
        ("--rounds", args.rounds, 1, 100),
        ("--duration", args.duration, 1, 600),
        ("--connections", args.connections, 1, 10_000),
        ("--routes", args.routes, 1, 100_000),
        ("--workers", args.workers, 1, 64),
    ):
        if not low <= value <= high:
            parser.error(f"{name} must be within {low}..{high}")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    return Options(
        rounds=args.rounds,
        duration_s=args.duration,
        connections=args.connections,
        routes=args.routes,
        workers=args.workers,
        access_log=args.access_log,
        only=only,
        out=args.out or Path(__file__).parent / "results" / f"sidebyside-{stamp}.json",
        proxy_cpus=args.proxy_cpus,
        fleetgate_command=(
            args.fleetgate_command.split()
            if args.fleetgate_command
            else servers.fleetgate_command()
        ),
        worker_metric=args.worker_metric,
        worker_label=args.worker_label,
        scratch=args.scratch,
        resilience=args.resilience,
    )


# ---------------------------------------------------------------------------------------------
# One wrk run with CPU accounting around it


def scrape(admin_port: int | None) -> str | None:
    if admin_port is None:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as resp:
            text: str = resp.read().decode()
            return text
    except OSError:
        return None


def wrk(launch: servers.Launch, *, connections: int, duration_s: int) -> str:
    argv = [
        "taskset", "-c", LOAD_CPUS, "wrk", "-t1", f"-c{connections}", f"-d{duration_s}s",
        "--latency", "-H", f"Host: {launch.host_header}",
        f"http://127.0.0.1:{launch.port}{launch.path}",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60)
    if done.returncode != 0:
        raise WrkOutputError(f"wrk exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return done.stdout


def process_labels(pids: Sequence[int]) -> dict[int, str]:
    labels = {}
    for pid in pids:
        stat = procstat.read_pid_stat(pid)
        labels[pid] = f"{pid} {stat.comm if stat else '?'}"
    return labels


def measure(
    launch: servers.Launch, root_pid: int, options: Options, round_no: int
) -> tuple[RunResult, str]:
    ticks_before = procstat.tree_cpu_ticks(root_pid)
    cores_before = procstat.read_core_times()
    metrics_before = scrape(launch.admin_port)
    text = wrk(launch, connections=options.connections, duration_s=options.duration_s)
    cores_after = procstat.read_core_times()
    ticks_after = procstat.tree_cpu_ticks(root_pid)
    metrics_after = scrape(launch.admin_port)
    report = parse_wrk(text)
    per_process = procstat.cpu_seconds_delta(ticks_before, ticks_after)
    labels = process_labels(list(per_process))
    usage = procstat.core_usage(cores_before, cores_after)
    shares = None
    if metrics_before is not None and metrics_after is not None:
        shares = worker_shares(
            metrics_before,
            metrics_after,
            metric=options.worker_metric,
            label=options.worker_label,
        )
    result = RunResult(
        config=launch.name,
        round=round_no,
        requests=report.requests,
        duration_s=report.duration_s,
        requests_per_s=report.requests_per_s,
        p50_ms=report.latency_ms.get(50),
        p99_ms=report.latency_ms.get(99),
        cpu_s=sum(per_process.values()),
        process_cpu_s={labels[pid]: seconds for pid, seconds in per_process.items()},
        core_busy_percent={core: u.busy_percent for core, u in usage.items()},
        core_steal_percent={core: u.steal_percent for core, u in usage.items()},
        socket_errors=report.socket_errors,
        non_2xx_3xx=report.non_2xx_3xx,
        worker_request_shares=shares,
    )
    if launch.name != "direct":
        busy = result.core_busy_percent
        other = other_load_percent(busy, options.proxy_cores, result.cpu_percent)
        result = dataclasses.replace(result, other_load_percent=other)
    return result, text


# ---------------------------------------------------------------------------------------------
# Orchestration


def machine() -> dict[str, object]:
    def first_line(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "unavailable"
        return (
            (done.stdout + done.stderr).strip().splitlines()[0] if done.stdout + done.stderr else ""
        )

    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")),
        "?",
    )
    clocksource = Path("/sys/devices/system/clocksource/clocksource0/current_clocksource")
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "clocksource": clocksource.read_text().strip() if clocksource.exists() else "?",
        "python": sys.version.split()[0],
        "nginx": first_line(["nginx", "-v"]),
        "haproxy": first_line(["haproxy", "-v"]),
        "wrk": first_line(["wrk", "-v"]),
    }


def launches(options: Options, work: Path, backend_port: int) -> list[servers.Launch]:
    chosen: list[servers.Launch] = []
    for name in options.only:
        common = {"port": free_port(), "backend_port": backend_port, "workers": options.workers}
        if name == "direct":
            chosen.append(servers.Launch("direct", [], backend_port))
        elif name == "nginx":
            chosen.append(
                servers.nginx_proxy(work / "nginx", access_log=options.access_log, **common)
            )
        elif name == "haproxy":
            chosen.append(
                servers.haproxy(
                    work / "haproxy",
                    access_log=options.access_log,
                    resilience=options.resilience,
                    **common,
                )
            )
        elif name == "fleetgate":
            reason = servers.fleetgate_missing(options.fleetgate_command)
            if reason is not None:
                print(f"skipping fleetgate: {reason}", file=sys.stderr)
                continue
            chosen.append(
                servers.fleetgate(
                    work / "fleetgate",
                    command=options.fleetgate_command,
                    admin_port=free_port(),
                    access_log=options.access_log,
                    routes=options.routes,
                    resilience=options.resilience,
                    **common,
                )
            )
    return chosen


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the Supervisor, which stops every server


@dataclasses.dataclass(frozen=True, slots=True)
class Results:
    payload: dict[str, object]  # everything, for the JSON file
    markdown: str
    worker_lines: list[str]


def start_servers(
    options: Options, sup: Supervisor, work: Path
) -> tuple[list[servers.Launch], dict[str, int]]:
    """Start the backend and every chosen proxy; check each proxy returns the backend's body.
    Returns the launches and the root pid whose process tree is each config's CPU account."""
    backend_port = free_port()
    backend = servers.backend(work / "backend", port=backend_port)
    backend_log = work / "backend.log"
    backend_proc = sup.start("backend", backend.argv, cpus=BACKEND_CPUS, log=backend_log)
    wait_ready("backend", backend_proc, backend_log, port=backend_port, host="bench.test", path="/")
    roots: dict[str, int] = {}
    chosen = launches(options, work, backend_port)
    for launch in chosen:
        if launch.name == "direct":
            roots["direct"] = backend_proc.pid
            continue
        log = work / f"{launch.name}.log"
        proc = sup.start(launch.name, launch.argv, cpus=options.proxy_cpus, log=log)
        body = wait_ready(
            launch.name, proc, log, port=launch.port, host=launch.host_header, path=launch.path
        )
        if body != servers.BACKEND_BODY.encode():
            raise ServerFailed(f"{launch.name} answered {body[:120]!r}, not the backend's body")
        roots[launch.name] = proc.pid
    if not chosen:
        raise ServerFailed("nothing to benchmark")
    return chosen, roots


def run_rounds(
    options: Options, sup: Supervisor, chosen: list[servers.Launch], roots: dict[str, int]
) -> tuple[list[RunResult], list[dict[str, object]], dict[str, int]]:
    """Warm-up, then the interleaved rounds. Returns runs, raw wrk texts and peak RSS (KiB)."""
    print(
        f"configs: {', '.join(c.name for c in chosen)}; warm-up {WARMUP_S}s each", file=sys.stderr
    )
    for launch in chosen:
        wrk(launch, connections=options.connections, duration_s=WARMUP_S)
    runs: list[RunResult] = []
    raw: list[dict[str, object]] = []
    peak_rss: dict[str, int] = {}
    for round_no in range(options.rounds):
        shift = round_no % len(chosen)  # A B C, then B C A, then C A B, ...
        for launch in chosen[shift:] + chosen[:shift]:
            sup.check_alive()
            time.sleep(GAP_S)
            result, text = measure(launch, roots[launch.name], options, round_no)
            runs.append(result)
            raw.append({"config": launch.name, "round": round_no, "wrk": text})
            flag = "  FLAGGED: errors" if result.errors else ""
            print(
                f"round {round_no + 1}/{options.rounds} {launch.name:>9}: "
                f"{result.requests_per_s:,.0f} req/s, "
                f"{result.cpu_us_per_request or 0:.1f} µs/req{flag}",
                file=sys.stderr,
            )
            tree = procstat.descendants(roots[launch.name], procstat.all_pid_stats())
            hwm = sum(procstat.read_vm_hwm_kib(pid) or 0 for pid in tree)
            peak_rss[launch.name] = max(peak_rss.get(launch.name, 0), hwm)
    return runs, raw, peak_rss


def run(options: Options) -> Results:
    ensure_tools(["nginx", "haproxy", "wrk", "taskset"])
    with contextlib.ExitStack() as stack:
        if options.scratch is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fleetgate-bench-")))
        else:
            work = options.scratch.resolve()
            work.mkdir(parents=True, exist_ok=True)
        work.chmod(0o755)  # nginx workers run as nobody when the harness is root
        sup = stack.enter_context(Supervisor())
        chosen, roots = start_servers(options, sup, work)
        all_stats = procstat.all_pid_stats()
        affinity = {
            name: {
                str(pid): sorted(os.sched_getaffinity(pid))
                for pid in procstat.descendants(root, all_stats)
            }
            for name, root in roots.items()
        }
        runs, raw, peak_rss = run_rounds(options, sup, chosen, roots)
    summaries = summarize(runs, peak_rss_kib=peak_rss)
    table, shares = markdown_table(summaries), worker_lines(summaries)
    payload: dict[str, object] = {
        "machine": machine(),
        "options": {**dataclasses.asdict(options), "out": str(options.out)},
        "affinity": affinity,
        "summary": [dataclasses.asdict(s) for s in summaries],
        "markdown": table,
        "worker_shares": shares,
        "runs": [
            {
                **dataclasses.asdict(r),
                "errors": r.errors,
                "cpu_us_per_request": r.cpu_us_per_request,
            }
            for r in runs
        ],
        "wrk_output": raw,
    }
    return Results(payload, table, shares)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        results = run(options)
    except (ServerFailed, WrkOutputError, RuntimeError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # every server was already stopped on the way out
        print("interrupted", file=sys.stderr)
        return 130
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(results.payload, indent=2, default=str) + "\n")
    print(f"\nmachine: {json.dumps(results.payload['machine'])}")
    print(
        f"wrk -t1 -c{options.connections} -d{options.duration_s}s, {options.rounds} rounds, "
        f"workers {options.workers}, access log {'on' if options.access_log else 'off'}, "
        f"resilience {'on' if options.resilience else 'off'}, "
        f"fleetgate table {options.routes} routes\n"
    )
    print(results.markdown)
    for line in results.worker_lines:
        print(line)
    print(f"\nwritten: {options.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
