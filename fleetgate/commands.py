"""The list of CLI commands. Add a module's `register` here to expose it."""

from __future__ import annotations

import argparse
from collections.abc import Callable

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

REGISTRY: list[Register] = []

from fleetgate import (  # noqa: E402  (each command module appends itself below)
    controller_cmd,
    demo,
    gateway_cmd,
    run,
    validate,
)

REGISTRY.append(validate.register)
REGISTRY.append(run.register)
REGISTRY.append(demo.register)
REGISTRY.append(gateway_cmd.register)
REGISTRY.append(controller_cmd.register)

from fleetgate import explain  # noqa: E402

REGISTRY.append(explain.register)

from fleetgate import release  # noqa: E402

REGISTRY.append(release.register)

from fleetgate import status_cmd  # noqa: E402

REGISTRY.append(status_cmd.register)
