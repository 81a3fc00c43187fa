"""`fleetgate gateway --controller URL`: a gateway replica that serves the controller's snapshots
(gateway.replica); with `--workers N`, N such processes on one port behind one admin port
(gateway.workers). Wiring and argument parsing only."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from fleetgate import process
from gateway import replica, workers
from gateway.admin import split_address


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "gateway",
        help="run a gateway that follows a controller's snapshots",
        description="Serve the routing table published by a fleetgate controller. Keeps the "
        "last snapshot in --cache-dir and serves it when the controller is down at start-up.",
    )
    replica.add_arguments(parser)
    parser.add_argument("--workers", type=int, default=1, help="gateway processes (SO_REUSEPORT)")
    process.add_log_level(parser)
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    process.configure_logging(args.log_level)
    try:
        settings = replica.settings_from(args)
    except ValueError as exc:
        print(f"fleetgate gateway: {exc}", file=sys.stderr)
        return 2
    if args.workers <= 1:
        return process.run(replica.run_replica(settings))
    if args.tls_listen is not None:
        print(
            "fleetgate gateway: --tls-listen with --workers N is not supported yet", file=sys.stderr
        )
        return 2
    pool = workers.WorkerPool(
        workers.WorkerSettings(
            count=args.workers,
            listen=split_address(args.listen),
            controller_url=args.controller,
            gateway_id=args.id or f"{os.uname().nodename}/{os.getpid()}",
            zone=args.zone,
            access_log=args.access_log,
            drain_timeout_s=args.drain_timeout,
            cache_dir=args.cache_dir,
            token=args.token,
        )
    )
    return process.run(_supervise(pool, settings.process.admin))


async def _supervise(pool: workers.WorkerPool, admin: str | None) -> int:
    stop = asyncio.Event()
    replica.handle_signals(stop)
    view = workers.WorkersView(pool)
    clean = await workers.supervise(pool, view, admin=admin, stop=stop)
    return 0 if clean else 1
