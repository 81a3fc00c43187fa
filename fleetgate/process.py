"""Process set-up for the long-running commands (`run`, `demo`, `gateway`, `controller`): the
event loop and the log format. I/O: configures logging on stderr.

The console script `fleetgate` enters through `fleetgate.cli.main`, not a `__main__` module, so
the commands choose uvloop here with `asyncio.Runner(loop_factory=uvloop.new_event_loop)` (Python
3.11's spelling of 3.12's `asyncio.run(..., loop_factory=...)`): `fleetgate run` and
`python -m fleetgate run` both serve on uvloop, as `python -m gateway` does.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")

LOG_LEVELS = ("debug", "info", "warning", "error")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on a fresh uvloop event loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS, help="process log level")


def configure_logging(level: str) -> None:
    """Process log lines on stderr (stdout is kept for the access log and command output)."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
