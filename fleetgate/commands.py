"""The list of CLI commands. Add a module's `register` here to expose it."""

from __future__ import annotations

import argparse
from collections.abc import Callable

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

REGISTRY: list[Register] = []

from fleetgate import validate  # noqa: E402  (each command module appends itself below)

REGISTRY.append(validate.register)

from fleetgate import explain  # noqa: E402

REGISTRY.append(explain.register)
