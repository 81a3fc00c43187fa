"""`fleetgate controller -c DIR`: the control plane on its own: the policy directory compiled and
published over the snapshot API (`/v1/snapshot`, `/v1/gateways`) for `fleetgate gateway`
replicas. Without `-c`, Kubernetes mode (fleetgate.controller_kube). Wiring only. I/O: an aiohttp
server.

File mode runs releases too (fleetgate.release_service): `--api` serves the operator API on a
listener of its own (operators and gateways are different audiences), `--state` keeps release
state across restarts, and built-in analysis scrapes the `--gateway-metrics` URLs.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from controller import publishing, snapshot_api, statusapi
from controller.dns import DnsSettings
from fleetgate import controller_kube, process, release_service, run
from fleetgate.pipeline import PolicyPipeline
from fleetgate.release_service import ReleaseOptions
from gateway.admin import split_address
from gateway.replica import handle_signals


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "controller",
        help="publish a policy directory to gateway replicas",
        description="Compile the policies in DIR (reloaded on change and on SIGHUP) and serve "
        "them as snapshots to `fleetgate gateway --controller URL`. Also serves /healthz and "
        "/status.",
    )
    parser.add_argument(
        "-c", "--config", type=Path, metavar="DIR",
        help="policy directory (file mode); without it: Kubernetes mode",
    )  # fmt: skip
    parser.add_argument("--listen", default="127.0.0.1:9080", metavar="HOST:PORT")
    parser.add_argument("--token", default=None, help="bearer token gateways must send")
    parser.add_argument("--poll-interval", type=float, default=1.0, metavar="S")
    parser.add_argument("--debounce", type=float, default=0.2, metavar="S")
    run.add_dns_arguments(parser)  # both modes
    release_service.add_arguments(parser, controller=True)
    controller_kube.add_arguments(parser)
    process.add_log_level(parser)
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    process.configure_logging(args.log_level)
    try:
        host, port = split_address(args.listen)
    except ValueError as exc:
        print(f"fleetgate controller: {exc}", file=sys.stderr)
        return 2
    try:
        dns = run.dns_settings_from(args)
    except ValueError as exc:
        print(f"fleetgate controller: {exc}", file=sys.stderr)
        return 2
    try:
        releases = ReleaseOptions.from_args(args, metrics_token=None)
        settings = controller_kube.settings_from(args, releases) if args.config is None else None
    except ValueError as exc:
        print(f"fleetgate controller: {exc}", file=sys.stderr)
        return 2
    if settings is not None:
        settings = dataclasses.replace(settings, dns=dns)
        return process.run(controller_kube.serve(settings, host, port, releases))
    return process.run(serve(args, host, port, releases, dns))


PIPELINE = web.AppKey("pipeline", PolicyPipeline)


async def serve(
    args: argparse.Namespace,
    host: str,
    port: int,
    releases: ReleaseOptions | None = None,
    dns: DnsSettings | None = None,
) -> int:
    releases = releases or ReleaseOptions()
    pipeline = PolicyPipeline(
        args.config,
        poll_interval_s=args.poll_interval,
        debounce_s=args.debounce,
        publish=publishing.PublishSettings(token=args.token),
        releases=releases.settings,
        dns=dns,
    )
    if not await pipeline.start("fleetgate controller"):
        return 1
    stop = asyncio.Event()
    handle_signals(stop, pipeline.source.request_reload)
    app = snapshot_api.build_app(pipeline.publisher)
    app[PIPELINE] = pipeline
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/status", _status)
    statusapi.add_routes(app, pipeline.status_document)  # /v1/status: `fleetgate status`
    try:
        async with process.serve_app(app, host, port) as (bound_host, bound_port):
            print(
                f"fleetgate controller: serving snapshots on http://{bound_host}:{bound_port}"
                f" (policies: {args.config})",
                file=sys.stderr,
                flush=True,
            )
            async with (
                release_service.operator_api(
                    releases, pipeline.runner, program="fleetgate controller"
                ),
                asyncio.TaskGroup() as tg,
            ):
                tasks = [
                    tg.create_task(feed(), name=f"controller.feed.{i}")
                    for i, feed in enumerate(pipeline.feeders())
                ]
                await stop.wait()
                for task in tasks:
                    task.cancel()
    except (OSError, ValueError) as exc:  # an address in use, the API's tokens file
        print(f"fleetgate controller: {exc}", file=sys.stderr)
        return 1
    return 0


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _status(request: web.Request) -> web.Response:
    pipeline = request.app[PIPELINE]
    body: dict[str, Any] = {
        "policy": pipeline.status(),
        "dns": pipeline.dns_status(),
        "gateways": [dataclasses.asdict(g) for g in pipeline.publisher.gateways()],
    }
    return web.json_response(body)
