"""Parse the text report of `wrk --latency` into numbers. Pure.

wrk prints durations with a unit suffix (us, ms, s, m, h), counts with an optional k/M/G suffix,
the `Latency Distribution` block only with `--latency`, and the `Socket errors` and
`Non-2xx or 3xx responses` lines only when there were any.
"""

from __future__ import annotations

import dataclasses
import re

_TIME_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_TIME = r"([0-9.]+)(us|ms|s|m|h)"
_SUMMARY = re.compile(r"^\s*(\d+) requests in " + _TIME + r", ", re.MULTILINE)
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+" + _TIME + r"\s*$", re.MULTILINE)
_LATENCY_AVG = re.compile(r"^\s*Latency\s+" + _TIME, re.MULTILINE)
_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.MULTILINE
)
_NON_2XX_3XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_RPS = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.MULTILINE)


class WrkOutputError(ValueError):
    """The text is not a complete wrk report (wrk failed, or its format changed)."""


@dataclasses.dataclass(frozen=True, slots=True)
class WrkReport:
    requests: int
    duration_s: float
    requests_per_s: float
    latency_avg_ms: float
    latency_ms: dict[int, float]  # percentile (50, 75, 90, 99) -> ms; empty without --latency
    socket_errors: dict[str, int]  # connect, read, write, timeout
    non_2xx_3xx: int

    @property
    def errors(self) -> int:
        """Everything that makes a run suspect: socket errors and non-2xx/3xx answers."""
        return sum(self.socket_errors.values()) + self.non_2xx_3xx


def _ms(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS_MS[unit]


def parse_wrk(text: str) -> WrkReport:
    summary, rps, avg = _SUMMARY.search(text), _RPS.search(text), _LATENCY_AVG.search(text)
    if summary is None or rps is None or avg is None:
        raise WrkOutputError(f"not a wrk report: {text[:200]!r}")
    socket = _SOCKET_ERRORS.search(text)
    non_2xx = _NON_2XX_3XX.search(text)
    return WrkReport(
        requests=int(summary.group(1)),
        duration_s=_ms(summary.group(2), summary.group(3)) / 1e3,
        requests_per_s=float(rps.group(1)),
        latency_avg_ms=_ms(avg.group(1), avg.group(2)),
        latency_ms={
            int(m.group(1)): _ms(m.group(2), m.group(3)) for m in _PERCENTILE.finditer(text)
        },
        socket_errors=dict(
            zip(
                ("connect", "read", "write", "timeout"),
                (int(n) for n in socket.groups()) if socket else (0, 0, 0, 0),
                strict=True,
            )
        ),
        non_2xx_3xx=int(non_2xx.group(1)) if non_2xx else 0,
    )
