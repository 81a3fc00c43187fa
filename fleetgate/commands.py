"""The CLI's commands, in the order `fleetgate --help` lists them.

Each command module exposes `register(subparsers)`, which adds its parser and sets `handler=`.
Modules import their heavy dependencies (kubernetes_asyncio, the planes) inside the handler where
that keeps `fleetgate validate` and friends fast to start.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from fleetgate import (
    controller_cmd,
    demo,
    explain,
    gateway_cmd,
    release,
    run,
    status_cmd,
    validate,
)

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

REGISTRY: list[Register] = [
    validate.register,
    run.register,
    demo.register,
    gateway_cmd.register,
    controller_cmd.register,
    explain.register,
    release.register,
    status_cmd.register,
]
