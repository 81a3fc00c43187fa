"""Process set-up for the long-running commands (`run`, `demo`, `gateway`, `controller`): the
event loop, the log format, and serving their aiohttp control apps. I/O: logging on stderr, sockets.

The console script `fleetgate` enters through `fleetgate.cli.main`, not a `__main__` module, so
the commands choose uvloop here with `asyncio.Runner(loop_factory=uvloop.new_event_loop)` (Python
3.11's spelling of 3.12's `asyncio.run(..., loop_factory=...)`): `fleetgate run` and
`python -m fleetgate run` both serve on uvloop, as `python -m gateway` does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import uvloop
from aiohttp import web

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


@contextlib.asynccontextmanager
async def serve_app(app: web.Application, host: str, port: int) -> AsyncIterator[tuple[str, int]]:
    """Serve a control-plane app (snapshots, operator API; never the hot path) while inside.

    Yields the bound (host, port), so port 0 works. OSError (address in use) is raised before
    yielding; the app is cleaned up however the block ends. Signals stay with the caller.
    """
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
        bound = runner.addresses[0]
        yield bound[0], bound[1]
    finally:
        await runner.cleanup()
