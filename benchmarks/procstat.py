"""CPU and memory accounting from /proc: pure parsers of its text, plus thin readers of the files.

Per-process CPU is utime+stime from /proc/PID/stat (clock ticks), summed over a process tree so
that nginx's master and workers (or fleetgate's parent and workers) count as one proxy. Per-core
busy and steal shares come from the `cpuN` lines of /proc/stat.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of /proc/PID/stat this harness uses."""

    pid: int
    comm: str
    ppid: int
    utime: int  # clock ticks
    stime: int

    @property
    def cpu_ticks(self) -> int:
        return self.utime + self.stime


def parse_pid_stat(text: str) -> ProcStat:
    """Parse one /proc/PID/stat line. `comm` may hold spaces and parentheses, so the fixed fields
    are those after the LAST ')' (proc(5): state is field 3, ppid 4, utime 14, stime 15)."""
    open_at, close_at = text.index("("), text.rindex(")")
    rest = text[close_at + 2 :].split()
    return ProcStat(
        pid=int(text[:open_at]),
        comm=text[open_at + 1 : close_at],
        ppid=int(rest[1]),
        utime=int(rest[11]),
        stime=int(rest[12]),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class CoreTimes:
    """Cumulative jiffies of one core from /proc/stat (guest time is already inside user)."""

    busy: int  # user + nice + system + irq + softirq
    idle: int  # idle + iowait
    steal: int

    @property
    def total(self) -> int:
        return self.busy + self.idle + self.steal


def parse_proc_stat(text: str) -> dict[int, CoreTimes]:
    """The per-core lines (`cpu0`, `cpu1`, ...) of /proc/stat, by core number."""
    cores: dict[int, CoreTimes] = {}
    for line in text.splitlines():
        name, _, values = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        fields = [int(v) for v in values.split()]
        fields += [0] * (8 - len(fields))  # very old kernels lack steal
        user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
        cores[int(name[3:])] = CoreTimes(
            busy=user + nice + system + irq + softirq, idle=idle + iowait, steal=steal
        )
    return cores


@dataclasses.dataclass(frozen=True, slots=True)
class CoreUsage:
    busy_percent: float
    steal_percent: float


def core_usage(
    before: Mapping[int, CoreTimes], after: Mapping[int, CoreTimes]
) -> dict[int, CoreUsage]:
    """Busy and steal shares of each core's elapsed jiffies between two samples."""
    usage: dict[int, CoreUsage] = {}
    for core, end in after.items():
        start = before.get(core)
        if start is None:
            continue
        elapsed = end.total - start.total
        if elapsed <= 0:
            usage[core] = CoreUsage(0.0, 0.0)
            continue
        usage[core] = CoreUsage(
            busy_percent=100.0 * (end.busy - start.busy) / elapsed,
            steal_percent=100.0 * (end.steal - start.steal) / elapsed,
        )
    return usage


def parse_vm_hwm_kib(status_text: str) -> int | None:
    """Peak resident set size (`VmHWM`, KiB) from /proc/PID/status; None for kernel threads."""
    for line in status_text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def descendants(root: int, stats: Iterable[ProcStat]) -> list[int]:
    """`root` and every process below it, parents before children."""
    children: dict[int, list[int]] = {}
    for stat in stats:
        children.setdefault(stat.ppid, []).append(stat.pid)
    tree, frontier = [root], [root]
    while frontier:
        frontier = sorted(pid for parent in frontier for pid in children.get(parent, ()))
        tree.extend(frontier)
    return tree


def cpu_seconds_delta(before: Mapping[int, int], after: Mapping[int, int]) -> dict[int, float]:
    """Per-process CPU seconds between two tick samples. A process that appeared in between counts
    from zero; one that exited is missing from `after` and its last ticks are lost (noted, rare)."""
    return {pid: (ticks - before.get(pid, 0)) / CLOCK_TICKS for pid, ticks in after.items()}


# ---------------------------------------------------------------------------------------------
# Readers (I/O): each returns None or skips a process that vanished between listing and reading.


def read_pid_stat(pid: int) -> ProcStat | None:
    try:
        return parse_pid_stat((PROC / str(pid) / "stat").read_text())
    except (FileNotFoundError, ProcessLookupError):
        return None


def all_pid_stats() -> list[ProcStat]:
    stats = []
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (stat := read_pid_stat(int(entry.name))) is not None:
            stats.append(stat)
    return stats


def tree_cpu_ticks(root: int) -> dict[int, int]:
    """utime+stime ticks of every live process in `root`'s tree."""
    stats = all_pid_stats()
    by_pid = {s.pid: s for s in stats}
    return {pid: by_pid[pid].cpu_ticks for pid in descendants(root, stats) if pid in by_pid}


def read_core_times() -> dict[int, CoreTimes]:
    return parse_proc_stat((PROC / "stat").read_text())


def read_vm_hwm_kib(pid: int) -> int | None:
    try:
        return parse_vm_hwm_kib((PROC / str(pid) / "status").read_text())
    except (FileNotFoundError, ProcessLookupError):
        return None
