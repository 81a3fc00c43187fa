"""The `fleetgate` command line: argument parsing and dispatch only; each command has a module."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

# Each command module exposes `register(subparsers) -> None`, which adds its parser and sets
# `handler=` (a function of the parsed namespace returning the exit status).
from fleetgate import commands

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleetgate",
        description="Multi-cluster ingress: one endpoint, YAML traffic policies, safe releases.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in commands.REGISTRY:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `fleetgate schema | head`: the reader left; not an error worth a traceback.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
