"""`fleetgate run -c DIR`: controller file source and gateway in one process (DESIGN.md §1,
"embedded default"). Wiring only: policy directory → reconcile → publisher → gateway(s).

* One process (`--workers 1`, the default): the publisher hands each new table to the gateway
  in-process (`Publisher.attach`), no JSON round trip.
* `--workers N`: this process keeps the controller half and serves the snapshot API on an
  internal loopback port; N worker processes subscribe to it like any gateway replica and share
  the listen port with SO_REUSEPORT; the admin port adds up their metrics (gateway.workers).
  Each worker gets the TLS, drain, zone and gateway config settings a single process would.

Gateway settings: `--zone` makes the balancer prefer clusters in that zone; `--gateway-config
FILE` (policies.gatewayconfig) holds the fleet administrator's circuit breaker and namespace
quotas (an invalid file at start-up: exit 2; later changes are followed, gateway.configfile).

Reloads: the directory is polled (`--poll-interval`) and a change is loaded once it has been
quiet for `--debounce`; SIGHUP loads at once. An invalid edit is logged with the same
`file:line:col` lines as `fleetgate validate`, counted (`fleetgate_reload_errors_total`), shown
in `/status` under `policy.last_error`, and changes nothing served. At start-up an invalid
directory is an error (exit 1), as with `nginx -t`: there is no last good table to keep.

DNS endpoints: a MemberCluster service port that names `dns` is resolved by
`controller.dns.DnsEndpoints` (system resolver, or `--dns-nameserver`), whose answers reach
reconcile as observed endpoints; a reconcile loop runs so that an answer that changes rebuilds the
table (debounced like a file edit). `/status` shows each name under `dns.names`.

Releases: a `controller.releases.ReleaseRunner` sits between the file source and reconcile, so
the tables carry every started release's live weights; `--api`, `--tokens` and `--state` serve
the operator API and keep release state across restarts (fleetgate.release_service). Built-in
release analysis reads this process's own admin `/metrics`.

SIGTERM/SIGINT: readiness fails, listeners stay open `--drain-delay` more seconds (so load
balancers see /readyz fail first), then close; in-flight requests finish (at most
`--drain-timeout` after that), exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from pathlib import Path

from aiohttp import web

from controller import snapshot_api
from controller.dns import DnsSettings
from fleetgate import process, release_service
from fleetgate.pipeline import PolicyPipeline
from fleetgate.release_service import ReleaseOptions
from gateway import replica, workers
from gateway.admin import split_address
from gateway.replica import GatewayProcess, ProcessSettings, handle_signals
from gateway.settings import GatewaySettings, Listener
from policies.gatewayconfig import GatewayConfig
from policies.table import RoutingTable

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "run",
        help="serve a policy directory: controller and gateway in one process",
        description="Serve the policies in DIR (reloaded on change and on SIGHUP). "
        "The admin port serves /healthz, /readyz, /status and /metrics.",
    )
    parser.add_argument("-c", "--config", required=True, type=Path, metavar="DIR")
    add_serving_arguments(parser, listen="127.0.0.1:8000")
    release_service.add_arguments(parser, controller=False)
    parser.set_defaults(handler=main)


def add_serving_arguments(parser: argparse.ArgumentParser, *, listen: str) -> None:
    """Options shared by `run` and `demo`."""
    parser.add_argument("--listen", default=listen, metavar="HOST:PORT", help="public listener")
    parser.add_argument(
        "--admin", default="127.0.0.1:9901", metavar="HOST:PORT", help='admin port, or "none"'
    )
    replica.add_admin_token_argument(parser)
    parser.add_argument("--workers", type=int, default=1, help="gateway processes (SO_REUSEPORT)")
    parser.add_argument("--access-log", action="store_true", help="JSON access lines to stdout")
    parser.add_argument(
        "--poll-interval", type=float, default=1.0, metavar="S", help="policy directory polling"
    )
    parser.add_argument(
        "--debounce", type=float, default=0.2, metavar="S", help="quiet time before a reload"
    )
    replica.add_tls_arguments(parser)
    replica.add_config_arguments(parser)
    add_dns_arguments(parser)
    parser.add_argument("--drain-timeout", type=float, default=10.0, metavar="S")
    parser.add_argument(
        "--drain-delay",
        type=float,
        default=0.0,
        metavar="S",
        help="on SIGTERM, keep accepting this long after /readyz fails",
    )
    process.add_log_level(parser)


def add_dns_arguments(parser: argparse.ArgumentParser) -> None:
    """How MemberCluster `dns` names are resolved (`run`, `demo`, `controller -c`)."""
    defaults = DnsSettings()
    group = parser.add_argument_group("DNS endpoints")
    group.add_argument(
        "--dns-nameserver",
        metavar="IP:PORT",
        help="ask this server (default: the system resolver, /etc/resolv.conf)",
    )
    group.add_argument(
        "--dns-min-ttl",
        type=float,
        default=defaults.min_ttl_s,
        metavar="S",
        help="look an answer up again no sooner than this, whatever its TTL",
    )
    group.add_argument(
        "--dns-grace",
        type=float,
        default=defaults.grace_s,
        metavar="S",
        help="a failing name keeps its last answer this long, then its endpoints go",
    )


def dns_settings_from(args: argparse.Namespace) -> DnsSettings:
    """`add_dns_arguments`' values; ValueError names the option at fault."""
    try:
        return DnsSettings(
            nameserver=args.dns_nameserver,
            min_ttl_s=args.dns_min_ttl,
            max_ttl_s=max(args.dns_min_ttl, DnsSettings().max_ttl_s),
            grace_s=args.dns_grace,
        )
    except ValueError as exc:
        raise ValueError(f"--dns-*: {exc}") from None


@dataclasses.dataclass(frozen=True, slots=True)
class RunSettings:
    """`fleetgate run` (process settings)."""

    directory: Path  # the policy directory
    listen: tuple[str, int]  # public listener; port 0 = any
    admin: str | None  # admin "host:port", or None for none
    workers: int = 1
    access_log: bool = False
    poll_interval_s: float = 1.0
    debounce_s: float = 0.2
    drain_timeout_s: float = 10.0
    drain_delay_s: float = 0.0
    admin_token: str | None = None
    tls_listener: Listener | None = None  # HTTPS listener next to `listen` (--tls-listen)
    zone: str | None = None  # the balancer prefers clusters in this zone (--zone)
    gateway_config: Path | None = None  # --gateway-config (each worker reads it too)
    config: GatewayConfig = dataclasses.field(default_factory=GatewayConfig)  # what it says
    releases: ReleaseOptions = dataclasses.field(default_factory=ReleaseOptions)
    dns: DnsSettings = dataclasses.field(default_factory=DnsSettings)  # MemberCluster `dns` names

    @classmethod
    def from_args(cls, args: argparse.Namespace, directory: Path) -> RunSettings:
        if args.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {args.workers}")
        listen = split_address(args.listen)
        listeners = replica.listeners_from(args, listen)
        return cls(
            directory=directory,
            listen=listen,
            tls_listener=listeners[1] if len(listeners) > 1 else None,
            zone=args.zone,
            gateway_config=args.gateway_config,
            config=replica.gateway_config_from(args.gateway_config),
            admin=None if args.admin == "none" else args.admin,
            workers=args.workers,
            access_log=args.access_log,
            poll_interval_s=args.poll_interval,
            debounce_s=args.debounce,
            drain_timeout_s=args.drain_timeout,
            drain_delay_s=args.drain_delay,
            admin_token=getattr(args, "admin_token", None),
            releases=ReleaseOptions.from_args(args, metrics_token=args.admin_token)
            if hasattr(args, "api")
            else ReleaseOptions(),
            dns=dns_settings_from(args),
        )


def main(args: argparse.Namespace) -> int:
    process.configure_logging(args.log_level)
    try:
        settings = RunSettings.from_args(args, args.config)
    except ValueError as exc:
        print(f"fleetgate run: {exc}", file=sys.stderr)
        return 2
    return process.run(serve(settings))


async def serve(settings: RunSettings, *, stop: asyncio.Event | None = None) -> int:
    """Serve until SIGTERM/SIGINT (or `stop`); the exit status."""
    stop = stop or asyncio.Event()
    pipeline = PolicyPipeline(
        settings.directory,
        poll_interval_s=settings.poll_interval_s,
        debounce_s=settings.debounce_s,
        releases=settings.releases.settings,
        dns=settings.dns,
        freeze_tables=True,
    )
    if not await pipeline.start("fleetgate run"):
        return 1
    handle_signals(stop, pipeline.source.request_reload)
    try:
        async with release_service.operator_api(
            settings.releases, pipeline.runner, program="fleetgate run"
        ):
            if settings.workers > 1:
                return await _serve_workers(settings, pipeline, stop)
            embedded = Embedded(settings, pipeline)
            await embedded.serve(stop, banner=True)
    except (OSError, ValueError) as exc:  # an address in use, the API's tokens file
        print(f"fleetgate run: {exc}", file=sys.stderr)
        return 1
    return 0


class Embedded:
    """One gateway process fed in-process by the pipeline (also what `fleetgate demo` runs)."""

    def __init__(self, settings: RunSettings, pipeline: PolicyPipeline) -> None:
        self.pipeline = pipeline
        host, port = settings.listen
        self.process = GatewayProcess(
            ProcessSettings(
                gateway=GatewaySettings(
                    listeners=(Listener(host, port),)
                    + (() if settings.tls_listener is None else (settings.tls_listener,)),
                    drain_delay_s=settings.drain_delay_s,
                    freeze_tables=True,
                ),
                admin=settings.admin,
                access_log=settings.access_log,
                drain_timeout_s=settings.drain_timeout_s,
                admin_token=settings.admin_token,
                zone=settings.zone,
                config=settings.config,
                config_path=settings.gateway_config,
            ),
            parts={"policy": pipeline.status, "dns": pipeline.dns_status},
            reload=pipeline.reload_stats,
        )
        pipeline.metrics_targets = self._own_metrics

    def _own_metrics(self) -> list[str]:
        admin = self.process.admin_address
        return [f"http://{admin}/metrics"] if admin and not admin.startswith("unix:") else []

    @property
    def listen(self) -> str:
        host, port = self.process.gateway.addresses[0]
        return f"{host}:{port}"

    async def serve(self, stop: asyncio.Event, *, banner: bool = False) -> None:
        self.pipeline.publisher.attach(f"{os.uname().nodename}/{os.getpid()}", None, self.apply)
        async with asyncio.TaskGroup() as tg:
            serving = tg.create_task(
                self.process.serve(self.pipeline.feeders(), stop), name="run.serve"
            )
            if banner:
                tg.create_task(self._banner(serving), name="run.banner")

    def apply(self, table: RoutingTable) -> None:
        self.process.apply(table)

    async def _banner(self, serving: asyncio.Task[None]) -> None:
        await self.process.listening.wait()
        admin = self.process.admin_address
        print(
            f"fleetgate run: listening on {replica.listening_on(self.process)}"
            + (f", admin http://{admin}" if admin else "")
            + f" (policies: {self.pipeline.source.settings.directory},"
            f" table v{self.process.gateway.table.version})",
            file=sys.stderr,
            flush=True,
        )


async def _serve_workers(
    settings: RunSettings, pipeline: PolicyPipeline, stop: asyncio.Event
) -> int:
    # The snapshot API the workers subscribe to: loopback only, a port of its own.
    internal = web.AppRunner(snapshot_api.build_app(pipeline.publisher), access_log=None)
    await internal.setup()
    try:
        site = web.TCPSite(internal, "127.0.0.1", 0)
        await site.start()
        api_host, api_port = internal.addresses[0][:2]
        tls = settings.tls_listener
        pool = workers.WorkerPool(
            workers.WorkerSettings(
                count=settings.workers,
                listen=settings.listen,
                controller_url=f"http://{api_host}:{api_port}",
                gateway_id=f"{os.uname().nodename}/{os.getpid()}",
                zone=settings.zone,
                access_log=settings.access_log,
                drain_timeout_s=settings.drain_timeout_s,
                tls_listen=None if tls is None else (tls.host, tls.port),
                certificates=() if tls is None else tls.certificates,
                drain_delay_s=settings.drain_delay_s,
                gateway_config=settings.gateway_config,
                admin_token=settings.admin_token,
            )
        )
        view = workers.WorkersView(
            pool,
            parts={"policy": pipeline.status, "dns": pipeline.dns_status},
            reload=pipeline.reload_stats,
        )
        pipeline.metrics_targets = lambda: (
            [f"http://{view.admin_address}/metrics"] if view.admin_address else []
        )
        async with asyncio.TaskGroup() as tg:
            supervising = tg.create_task(
                workers.supervise(
                    pool, view, admin=settings.admin, stop=stop, feeders=pipeline.feeders()
                ),
                name="run.workers",
            )
            tg.create_task(_workers_banner(settings, pool, view, stop), name="run.banner")
        return 0 if supervising.result() else 1
    finally:
        await internal.cleanup()


async def _workers_banner(
    settings: RunSettings, pool: workers.WorkerPool, view: workers.WorkersView, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        if await view.not_ready() is None:
            secure = f", https://{pool.tls_listen}" if pool.tls_listen else ""
            print(
                f"fleetgate run: listening on http://{pool.listen}{secure}"
                f" with {settings.workers} workers"
                + (f", admin http://{view.admin_address}" if view.admin_address else "")
                + f" (policies: {settings.directory})",
                file=sys.stderr,
                flush=True,
            )
            return
        await asyncio.sleep(0.05)
