"""`python -m gateway`: one gateway replica following a controller (also what each worker of
`--workers N` runs). Chooses uvloop (STYLE.md §3.7: only the `__main__` modules choose the loop)."""

import argparse
import asyncio
import logging
import sys

import uvloop

from gateway import replica


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway",
        description="Run one gateway that serves the snapshots of a fleetgate controller.",
    )
    replica.add_arguments(parser)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    args = parser.parse_args()
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s %(levelname)s worker={args.worker} %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = replica.settings_from(args)
    except ValueError as exc:  # e.g. a gateway config file broken since the parent read it
        print(f"python -m gateway: {exc}", file=sys.stderr)
        return 2
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(replica.run_replica(settings))


sys.exit(main())
