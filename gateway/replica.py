"""One gateway process: the proxy, its observers, its admin port, the table feed and the
shutdown order. I/O: listeners (through gateway.server), the admin port, signals, and whatever
feeds it tables (gateway.subscriber for a replica, the embedded controller for `fleetgate run`).

Order of life (uvicorn's, STYLE.md §3.7):
1. the admin port comes up at once, answering `/readyz` 503 `no_table`;
2. the feeders start; listeners are bound only once the first table has been applied, so a
   worker that shares a port through SO_REUSEPORT never answers 404 for lack of a table;
3. on stop (SIGTERM/SIGINT): readiness fails (draining), listeners close, responses say
   `Connection: close`, in-flight requests get `drain_timeout_s`; then feeders are cancelled,
   connections closed, the admin port last.

`python -m gateway` and `fleetgate gateway` share this module's arguments (`add_arguments`);
`fleetgate run` shares the TLS ones and the gateway config and zone (`add_config_arguments`).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway import accesslog
from gateway.admin import LocalView, StatusPart, bound_address, split_address, start_admin
from gateway.configfile import ConfigFollower
from gateway.counters import Counters
from gateway.metrics import Recorder, ReloadStats
from gateway.server import Gateway
from gateway.settings import CertificateFiles, GatewaySettings, Listener
from gateway.subscriber import Subscriber, SubscriberSettings
from policies.gatewayconfig import GatewayConfig, load_gateway_config
from policies.table import RoutingTable

log = logging.getLogger(__name__)

Feeder = Callable[[], Coroutine[Any, Any, None]]

# The table a gateway holds before its first real one: version 0, no routes (never served:
# listeners are bound only after a newer table arrives).
EMPTY_TABLE = RoutingTable(
    version=0, hosts={}, wildcards=(), any_host=None, backends={}, checksum=""
)


@dataclasses.dataclass(frozen=True, slots=True)
class ProcessSettings:
    """One gateway process (process settings; traffic policy comes from tables)."""

    gateway: GatewaySettings
    admin: str | None = "127.0.0.1:9901"  # "host:port", "unix:/path", or None for no admin port
    worker: str = "0"  # the `worker` label of this process's metrics
    access_log: bool = False  # JSON lines on the `gateway.access` logger, to stdout
    drain_timeout_s: float = 10.0  # in-flight requests get this long after SIGTERM
    access_log_flush_s: float = 0.2  # buffered access lines are written at least this often
    admin_token: str | None = None  # bearer token for the admin port (gateway.admin)
    # The gateway's topology zone: the balancer prefers clusters in it (locality, see
    # gateway.routing.BalancingPicker); None: no preference.
    zone: str | None = None
    # The fleet administrator's limits from `--gateway-config` (circuit breaker, namespace
    # quotas; policies.gatewayconfig), as read at start-up; with `config_path` the file is
    # followed and a valid change replaces them (gateway.configfile).
    config: GatewayConfig = dataclasses.field(default_factory=GatewayConfig)
    config_path: Path | None = None


class GatewayProcess:
    """A gateway plus admin port and observers; `apply` is its `TableSink`."""

    def __init__(
        self,
        settings: ProcessSettings,
        *,
        parts: Mapping[str, StatusPart] | None = None,
        reload: Callable[[], ReloadStats | None] | None = None,
    ) -> None:
        self.settings = settings
        self.access_handler: accesslog.BufferedHandler | None = None
        self.access = accesslog.AccessLog() if settings.access_log else None
        self.recorder = Recorder(self.access)
        self.gateway = Gateway(
            settings.gateway,
            EMPTY_TABLE,
            observer=self.recorder,
            counters=Counters(),
            breaker=settings.config.breaker,
            namespace_quotas=settings.config.namespace_quotas,
            zone=settings.zone,
        )
        self.view = LocalView(
            self.gateway, self.recorder, worker=settings.worker, parts=parts, reload=reload
        )
        self.first_table = asyncio.Event()
        self.applied = 0  # tables applied
        self.listening = asyncio.Event()  # set once the listeners are bound
        self.admin_address: str | None = None  # bound admin address once serving
        self.config_follower = (
            None
            if settings.config_path is None
            else ConfigFollower(settings.config_path, self._configure)
        )

    def _configure(self, config: GatewayConfig) -> None:
        self.gateway.ctx.limits.configure(config.breaker, config.namespace_quotas)

    def apply(self, table: RoutingTable) -> None:
        """`gateway.sink.TableSink`: swap in `table` (raises StaleTableError if not newer)."""
        self.gateway.apply(table)
        self.applied += 1
        self.first_table.set()

    async def serve(self, feeders: Sequence[Feeder], stop: asyncio.Event) -> None:
        """Run until `stop` is set, then shut down in order (see the module docstring)."""
        settings = self.settings
        if self.access is not None:
            self.access_handler = self.access.direct = accesslog.install()
        admin = (
            await start_admin(self.view, settings.admin, token=settings.admin_token)
            if settings.admin
            else None
        )
        try:
            if admin is not None:
                self.admin_address = bound_address(admin)
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(feed(), name=f"gateway.feed.{i}")
                    for i, feed in enumerate(feeders)
                ]
                if self.access_handler is not None:
                    tasks.append(tg.create_task(self._flush_access_log(), name="gateway.flush"))
                if self.config_follower is not None:
                    follow = self.config_follower.run()
                    tasks.append(tg.create_task(follow, name="gateway.config"))
                await _first_of(self.first_table, stop)
                if not stop.is_set():
                    await self.gateway.start()
                    self.listening.set()
                    log.info(
                        "gateway listening worker=%s on=%s table=%d",
                        settings.worker,
                        ",".join(f"{h}:{p}" for h, p in self.gateway.addresses),
                        self.gateway.table.version,
                    )
                await stop.wait()
                log.info(
                    "draining worker=%s in_flight_connections=%d timeout=%.1fs",
                    settings.worker,
                    len(self.gateway.ctx.downstreams),
                    settings.drain_timeout_s,
                )
                drained = await self.gateway.drain(settings.drain_timeout_s)
                if not drained:
                    log.warning(
                        "drain timed out after %.1fs; closing %d client connections",
                        settings.drain_timeout_s,
                        len(self.gateway.ctx.downstreams),
                    )
                for task in tasks:
                    task.cancel()
        finally:
            await self.gateway.close()
            if admin is not None:
                await admin.cleanup()
            if self.access_handler is not None:
                self.access_handler.close()
                accesslog.log.removeHandler(self.access_handler)

    async def _flush_access_log(self) -> None:
        handler = self.access_handler
        assert handler is not None
        while True:
            await asyncio.sleep(self.settings.access_log_flush_s)
            handler.flush()


async def _first_of(*events: asyncio.Event) -> None:
    async with asyncio.TaskGroup() as tg:
        waiters = [tg.create_task(e.wait(), name="gateway.wait") for e in events]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()


def handle_signals(stop: asyncio.Event, reload: Callable[[], None] | None = None) -> None:
    """SIGTERM and SIGINT set `stop`; SIGHUP calls `reload` (or is ignored without one)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload or (lambda: None))


async def watch_parent(parent_pid: int, stop: asyncio.Event, interval_s: float = 0.5) -> None:
    """Set `stop` when the parent process is gone (a worker must not outlive its supervisor)."""
    while not stop.is_set():
        if os.getppid() != parent_pid:
            log.warning("parent process %d is gone; shutting down", parent_pid)
            stop.set()
            return
        await asyncio.sleep(interval_s)


# ---------------------------------------------------------------------------------------------
# A replica: tables from the controller's snapshot API


def listening_on(process: GatewayProcess) -> str:
    """ "http://host:port" of each bound listener ("https://" for TLS ones), for banners."""
    pairs = zip(process.settings.gateway.listeners, process.gateway.addresses, strict=True)
    return ", ".join(
        f"{'https' if listener.certificates else listener.scheme}://{host}:{port}"
        for listener, (host, port) in pairs
    )


async def _banner(process: GatewayProcess, subscriber: SubscriberSettings) -> None:
    await process.listening.wait()
    admin = process.admin_address
    print(
        f"fleetgate gateway: listening on {listening_on(process)}"
        + (f", admin http://{admin}" if admin and ":" in admin else "")
        + f" (controller {subscriber.controller_url}, table v{process.gateway.table.version})",
        file=sys.stderr,
        flush=True,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class ReplicaSettings:
    process: ProcessSettings
    subscriber: SubscriberSettings
    parent_pid: int | None = None  # a worker: exit when this process is gone


def add_admin_token_argument(parser: argparse.ArgumentParser) -> None:
    """`--admin-token`, the same on `fleetgate gateway`, `run` and `demo`."""
    parser.add_argument(
        "--admin-token",
        default=os.environ.get("FLEETGATE_ADMIN_TOKEN"),
        metavar="TOKEN",
        help="bearer token for the admin port's /status and /metrics "
        "(default: $FLEETGATE_ADMIN_TOKEN; /healthz and /readyz stay open)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of one replica process (shared by `python -m gateway`, `fleetgate gateway`)."""
    parser.add_argument(
        "--controller", required=True, metavar="URL", help="the controller's snapshot API"
    )
    parser.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT")
    parser.add_argument(
        "--admin",
        default="127.0.0.1:9901",
        metavar="ADDR",
        help='admin port: "host:port", "unix:/path" or "none"',
    )
    parser.add_argument("--id", default=None, help="gateway id (default: hostname/pid)")
    parser.add_argument(
        "--metrics-url",
        default=None,
        metavar="URL",
        help="admin /metrics URL reported to the controller for release analysis (default: "
        "from --admin when it names a host and port)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="keep the last snapshot here (static stability)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("FLEETGATE_SNAPSHOT_TOKEN"),
        help="bearer token for the snapshot API (default: $FLEETGATE_SNAPSHOT_TOKEN)",
    )
    parser.add_argument("--access-log", action="store_true", help="JSON access lines to stdout")
    add_admin_token_argument(parser)
    parser.add_argument("--drain-timeout", type=float, default=10.0, metavar="SECONDS")
    parser.add_argument(
        "--drain-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="on SIGTERM, keep accepting this long after /readyz fails",
    )
    parser.add_argument("--reuse-port", action="store_true", help="bind with SO_REUSEPORT")
    add_config_arguments(parser)
    add_tls_arguments(parser)
    parser.add_argument("--worker", default="0", help=argparse.SUPPRESS)
    parser.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The gateway config file and the zone (`fleetgate run`, `fleetgate gateway`)."""
    parser.add_argument(
        "--gateway-config",
        type=Path,
        default=None,
        metavar="FILE",
        help="GatewayConfig YAML: circuit breaker and namespace quotas (followed on change)",
    )
    parser.add_argument(
        "--zone",
        default=None,
        help="this gateway's topology zone: clusters labelled with it are preferred "
        "(and it is reported to the controller)",
    )


def gateway_config_from(path: Path | None) -> GatewayConfig:
    """The config in `path` (defaults without one). ValueError lists every problem."""
    if path is None:
        return GatewayConfig()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ValueError(f"--gateway-config {path}: {reason}") from None
    config, problems = load_gateway_config(str(path), text)
    if config is None:
        raise ValueError(
            "invalid --gateway-config:\n" + "\n".join(str(problem) for problem in problems)
        )
    return config


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """TLS termination: an HTTPS listener next to the plain one (`fleetgate run`, `gateway`)."""
    parser.add_argument(
        "--tls-listen",
        default=None,
        metavar="HOST:PORT",
        help="HTTPS listener (in addition to --listen); needs --tls-cert/--tls-key",
    )
    parser.add_argument(
        "--tls-cert",
        action="append",
        default=[],
        metavar="FILE",
        help="PEM certificate chain; repeat with --tls-key for more, chosen by SNI from the "
        "names each certificate holds; the first is the default. Reloaded when changed.",
    )
    parser.add_argument(
        "--tls-key", action="append", default=[], metavar="FILE", help="its private key (PEM)"
    )


def listeners_from(args: argparse.Namespace, listen: tuple[str, int]) -> tuple[Listener, ...]:
    """The plain listener, plus the HTTPS one when asked. Raises ValueError for unpaired
    certificates or a TLS listener without any."""
    certs, keys = args.tls_cert, args.tls_key
    if len(certs) != len(keys):
        raise ValueError(f"{len(certs)} --tls-cert but {len(keys)} --tls-key: give them in pairs")
    plain = Listener(*listen)
    if args.tls_listen is None:
        if certs:
            raise ValueError("--tls-cert/--tls-key need --tls-listen HOST:PORT")
        return (plain,)
    if not certs:
        raise ValueError("--tls-listen needs at least one --tls-cert/--tls-key pair")
    pairs = tuple(CertificateFiles(c, k) for c, k in zip(certs, keys, strict=True))
    host, port = split_address(args.tls_listen)
    return plain, Listener(host, port, scheme="https", certificates=pairs)


def settings_from(args: argparse.Namespace) -> ReplicaSettings:
    host, port = split_address(args.listen)
    gateway_id = args.id or f"{os.uname().nodename}/{os.getpid()}"
    cache = args.cache_dir / f"snapshot-{args.worker}.json" if args.cache_dir else None
    return ReplicaSettings(
        process=ProcessSettings(
            gateway=GatewaySettings(
                listeners=listeners_from(args, (host, port)),
                reuse_port=args.reuse_port,
                drain_delay_s=args.drain_delay,
                freeze_tables=True,
            ),
            admin=None if args.admin == "none" else args.admin,
            worker=args.worker,
            access_log=args.access_log,
            drain_timeout_s=args.drain_timeout,
            admin_token=args.admin_token or None,
            zone=args.zone,
            config=gateway_config_from(args.gateway_config),
            config_path=args.gateway_config,
        ),
        subscriber=SubscriberSettings(
            controller_url=args.controller,
            gateway_id=gateway_id,
            zone=args.zone,
            metrics_url=args.metrics_url or _metrics_url(args.admin),
            cache_path=cache,
            token=args.token,
        ),
        parent_pid=args.parent_pid,
    )


def _metrics_url(admin: str) -> str | None:
    """`http://host:port/metrics` for an admin address others can reach by it (not a wildcard
    host, a port of 0 or a Unix socket)."""
    try:
        host, port = split_address(admin)
    except ValueError:
        return None
    if port == 0 or host in ("", "0.0.0.0", "::"):
        return None
    return f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"


async def run_replica(settings: ReplicaSettings) -> int:
    """Serve tables from the controller until SIGTERM/SIGINT; returns the exit status."""
    stop = asyncio.Event()
    handle_signals(stop)
    process = GatewayProcess(settings.process)
    subscriber = Subscriber(settings.subscriber, process, frozen=process.gateway.frozen)

    def reload_stats() -> ReloadStats:
        refused = subscriber.status.refused
        return ReloadStats(loads=process.applied + refused, failures=refused)

    process.view.parts["subscription"] = lambda: dataclasses.asdict(subscriber.status)
    process.view.reload = reload_stats
    feeders: list[Feeder] = [subscriber.run]
    if settings.parent_pid is not None:
        parent = settings.parent_pid
        feeders.append(lambda: watch_parent(parent, stop))
    else:
        feeders.append(lambda: _banner(process, settings.subscriber))
    await process.serve(feeders, stop)
    return 0
