"""`fleetgate gateway --controller URL`: a gateway replica that serves the controller's snapshots
(gateway.replica); with `--workers N`, N such processes on one port behind one admin port
(gateway.workers), each with the same TLS, drain, zone and gateway config settings. Wiring and
argument parsing only."""

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
    listeners = settings.process.gateway.listeners
    tls = listeners[1] if len(listeners) > 1 else None
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
            tls_listen=None if tls is None else (tls.host, tls.port),
            certificates=() if tls is None else tls.certificates,
            drain_delay_s=args.drain_delay,
            gateway_config=args.gateway_config,
            admin_token=settings.process.admin_token,
        )
    )
    return process.run(_supervise(pool, settings.process.admin))


async def _supervise(pool: workers.WorkerPool, admin: str | None) -> int:
    stop = asyncio.Event()
    replica.handle_signals(stop)
    view = workers.WorkersView(pool)
    async with asyncio.TaskGroup() as tg:
        supervising = tg.create_task(
            workers.supervise(pool, view, admin=admin, stop=stop), name="gateway.workers"
        )
        tg.create_task(_banner(pool, view, stop), name="gateway.banner")
    return 0 if supervising.result() else 1


async def _banner(pool: workers.WorkerPool, view: workers.WorkersView, stop: asyncio.Event) -> None:
    """The start-up line once every worker is ready (what a single replica prints)."""
    while not stop.is_set():
        if await view.not_ready() is None:
            secure = f", https://{pool.tls_listen}" if pool.tls_listen else ""
            address = view.admin_address
            admin = f", admin http://{address}" if address and ":" in address else ""
            print(
                f"fleetgate gateway: listening on http://{pool.listen}{secure}"
                f" with {pool.settings.count} workers{admin}"
                f" (controller {pool.settings.controller_url})",
                file=sys.stderr,
                flush=True,
            )
            return
        await asyncio.sleep(0.05)
