"""`fleetgate controller` in Kubernetes mode (no `-c DIR`): policies from the hub cluster, member
clusters through their kubeconfigs, leader election on a Lease. Arguments and wiring only
(controller.kubemode composes the parts). I/O: an aiohttp server for snapshots and status.

Without `--hub-kubeconfig` the controller uses the cluster it runs in (its ServiceAccount), as
the Deployment in `deploy/` does. `--id` defaults to `$POD_NAME`, then the host name.

Releases take the same flags as in file mode (fleetgate.release_service), except `--state`:
their state lives in the Release objects (controller.kubestate). `--api` serves the operator API
on every replica; the leader answers it, a standby answers 503 `not_leader`. Without
`--gateway-metrics`, built-in analysis scrapes the metrics URLs the gateways report.

The controller modules are imported when Kubernetes mode starts, not with this module: loading
kubernetes_asyncio takes most of a second, which every other `fleetgate` command would pay.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from fleetgate import process, release_service
from fleetgate.release_service import ReleaseOptions
from gateway.replica import handle_signals

if TYPE_CHECKING:
    from controller import api_tokens
    from controller.kubemode import KubeController, KubeModeSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Kubernetes mode (without -c)")
    group.add_argument(
        "--hub-kubeconfig", type=Path, default=None, metavar="FILE",
        help="kubeconfig of the fleet (hub) cluster; default: the cluster this runs in",
    )  # fmt: skip
    group.add_argument("--hub-context", default=None, help="context in --hub-kubeconfig")
    group.add_argument(
        "--lease-namespace", default="fleetgate-system", metavar="NS",
        help="namespace of the leader-election Lease (and of kubeconfig Secrets)",
    )  # fmt: skip
    group.add_argument("--lease-name", default="fleetgate-controller", metavar="NAME")
    group.add_argument("--id", default=None, help="replica id in the Lease (default: $POD_NAME)")
    group.add_argument(
        "--member-kubeconfigs", choices=("secret", "file"), default="secret",
        help="MemberCluster spec.kubeconfig names a Secret in the hub, or a file here",
    )  # fmt: skip
    group.add_argument("--lease-duration", type=float, default=15.0, metavar="S")
    group.add_argument("--renew-deadline", type=float, default=10.0, metavar="S")
    group.add_argument("--retry-period", type=float, default=2.0, metavar="S")
    group.add_argument(
        "--probe-interval", type=float, default=5.0, metavar="S",
        help="member API /readyz probing period",
    )  # fmt: skip
    group.add_argument(
        "--down-after", type=int, default=3, metavar="N",
        help="failed /readyz probes before a member cluster is down",
    )  # fmt: skip
    group.add_argument(
        "--withdraw-after", type=float, default=30.0, metavar="S",
        help="grace before a down member cluster's endpoints leave the table",
    )  # fmt: skip
    group.add_argument(
        "--watch-timeout", type=float, default=300.0, metavar="S",
        help="timeoutSeconds of each WATCH request",
    )  # fmt: skip


def settings_from(
    args: argparse.Namespace, releases: ReleaseOptions | None = None
) -> KubeModeSettings:
    """Raises ValueError for flags Kubernetes mode cannot honour (`--state`)."""
    from controller.health import HealthSettings
    from controller.hubsource import HubSettings
    from controller.kubemode import KubeModeSettings
    from controller.members import MemberSettings
    from controller.publishing import PublishSettings
    from controller.reconcile import ReconcileSettings
    from controller.watching import WatchSettings

    watch = WatchSettings(watch_timeout_s=args.watch_timeout)
    if getattr(args, "state", None) is not None:
        raise ValueError(
            "--state is for file mode: in Kubernetes mode release state is kept in "
            "the Release objects' status"
        )
    return KubeModeSettings(
        identity=args.id or os.environ.get("POD_NAME") or f"{os.uname().nodename}-{os.getpid()}",
        lease_namespace=args.lease_namespace,
        lease_name=args.lease_name,
        hub_kubeconfig=args.hub_kubeconfig,
        hub_context=args.hub_context,
        member_kubeconfigs=args.member_kubeconfigs,
        lease_duration_s=args.lease_duration,
        renew_deadline_s=args.renew_deadline,
        retry_period_s=args.retry_period,
        hub=HubSettings(watch=watch),
        members=MemberSettings(
            watch=watch,
            health=HealthSettings(
                interval_s=args.probe_interval,
                failure_threshold=args.down_after,
                grace_s=args.withdraw_after,
            ),
        ),
        reconcile=ReconcileSettings(
            debounce_s=args.debounce, max_delay_s=max(2.0, 4 * args.debounce)
        ),
        publish=PublishSettings(token=args.token),
        releases=(releases or ReleaseOptions()).settings,
    )


async def serve(
    settings: KubeModeSettings, host: str, port: int, releases: ReleaseOptions | None = None
) -> int:
    """Serve until SIGTERM/SIGINT; the exit status. `releases.api` adds the operator API."""
    from controller import api_tokens, errors
    from controller.kubemode import KubeController, connect_hub

    options = releases or ReleaseOptions()
    try:
        tokens, one_time = release_service.load_tokens(options)
    except api_tokens.TokenFileError as exc:
        print(f"fleetgate controller: {exc}", file=sys.stderr)
        return 1
    try:
        hub = await connect_hub(settings)
    except errors.ConfigError as exc:
        print(f"fleetgate controller: {exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    handle_signals(stop)
    try:
        controller = KubeController(settings, hub)
        app = web.Application()
        controller.add_routes(app)

        async def readyz(request: web.Request) -> web.Response:
            if controller.ready:
                return web.Response(text="ok\n")
            return web.Response(status=503, text="no snapshot published yet\n")

        app.router.add_get("/healthz", _healthz)
        app.router.add_get("/readyz", readyz)
        async with process.serve_app(app, host, port) as (bound_host, bound_port):
            print(
                f"fleetgate controller: serving snapshots on http://{bound_host}:{bound_port}"
                f" (Kubernetes mode, id {settings.identity})",
                file=sys.stderr,
                flush=True,
            )
            async with (
                _operator_api(controller, options, tokens, one_time),
                asyncio.TaskGroup() as group,
            ):
                running = group.create_task(controller.run(), name="controller.kube")
                await stop.wait()
                running.cancel()
    except OSError as exc:  # an address in use
        print(f"fleetgate controller: {exc}", file=sys.stderr)
        return 1
    finally:
        await hub.close()
    return 0


@contextlib.asynccontextmanager
async def _operator_api(
    controller: KubeController,
    options: ReleaseOptions,
    tokens: api_tokens.Tokens,
    one_time: str | None,
) -> AsyncIterator[None]:
    if options.api is None:
        yield
        return
    app = web.Application(client_max_size=64 << 10)
    controller.add_api_routes(app, tokens)
    async with process.serve_app(app, *options.api) as (host, port):
        release_service.announce_api(f"{host}:{port}", one_time, program="fleetgate controller")
        yield


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")
