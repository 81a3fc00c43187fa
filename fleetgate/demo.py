"""`fleetgate demo`: three member clusters on loopback behind one embedded gateway, and what to
try. I/O: demo backends (fleetgate.demo_backend), a temporary policy directory, the embedded
gateway (fleetgate.run), and, with `--traffic N`, HTTP requests to the gateway.

The policy directory is a **copy** of `examples/fleet` in a fresh temporary directory (printed,
removed on exit), so it can be edited while the demo runs: the gateway reloads it. The backends
are the copy's static MemberCluster endpoints (127.0.1.x east, 127.0.2.x west, 127.0.3.x eu):
one demo server per address, answering with its cluster, version (`web-v2` is `v2`, the others
`v1`) and pod. An endpoint whose port is taken, or every endpoint with `--backend-ports any`,
gets a free port instead, and the copy is rewritten to match.

With `--api HOST:PORT` the operator API is served too, so the copy's Release (`shop/web-v2-rollout`)
can be driven with `fleetgate release ...` (docs/release-walkthrough.md); `--canary-errors R` makes
the canary (v2) servers fail that fraction of requests, to watch analysis roll it back.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import re
import shutil
import sys
import tempfile
from pathlib import Path

import aiohttp

from controller import sources
from fleetgate import process, release_service
from fleetgate.demo_backend import BackendSpec, DemoBackend
from fleetgate.pipeline import PolicyPipeline
from fleetgate.run import Embedded, RunSettings, add_serving_arguments
from gateway.replica import handle_signals
from policies import loading

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fleet"
SHOP = "shop.example.com"
API = "api.example.com"
CANARY_HEADER = ("x-canary", "always")
_VERSION = re.compile(r"-(v\d+)$")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "demo",
        help="three member clusters on loopback behind one gateway",
        description="Start demo member clusters on 127.0.1.x, 127.0.2.x and 127.0.3.x, serve a "
        "live copy of examples/fleet through the gateway, and print what to try.",
    )
    parser.add_argument(
        "--traffic", type=int, default=0, metavar="N", help="send N requests and print the split"
    )
    parser.add_argument("--exit", action="store_true", help="exit after --traffic (for scripts)")
    parser.add_argument(
        "--policies", type=Path, default=EXAMPLE, metavar="DIR", help="directory to copy"
    )
    parser.add_argument(
        "--backend-ports",
        choices=("example", "any"),
        default="example",
        help="bind the backends on the ports the policies name, or on free ones",
    )
    parser.add_argument(
        "--canary-errors", type=float, default=0.0, metavar="RATE",
        help="fraction (0..1) of requests the canary (v2) servers answer with 500",
    )  # fmt: skip
    add_serving_arguments(parser, listen="127.0.0.1:8080")
    release_service.add_arguments(parser, controller=False)
    parser.set_defaults(handler=main, poll_interval=0.5)


def main(args: argparse.Namespace) -> int:
    process.configure_logging(args.log_level)
    if args.traffic < 0 or args.workers != 1 or not 0.0 <= args.canary_errors <= 1.0:
        print(
            "fleetgate demo: --traffic must be >= 0, --workers 1, --canary-errors within 0..1",
            file=sys.stderr,
        )
        return 2
    if not args.policies.is_dir():
        print(f"fleetgate demo: no policy directory at {args.policies}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="fleetgate-demo-"))
    try:
        live = work / "policies"
        shutil.copytree(args.policies, live)
        return process.run(demo(args, live))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def backend_specs(directory: Path, *, any_port: bool) -> list[tuple[str, BackendSpec]]:
    """(address in the policies, spec) for each static endpoint address of the directory's
    member clusters, one demo server each."""
    result = loading.load_documents(sources.read_policy_files([directory]))
    specs: dict[str, BackendSpec] = {}
    for cluster in result.policies.clusters:
        for service in cluster.services:
            match = _VERSION.search(service.name)
            version = match.group(1) if match else "v1"
            for port in service.ports:
                for address in port.endpoints:
                    host, _, number = address.rpartition(":")
                    if address not in specs:
                        specs[address] = BackendSpec(
                            cluster=cluster.name,
                            version=version,
                            host=host,
                            port=0 if any_port else int(number),
                            service=service.name,
                        )
    return list(specs.items())


async def start_backends(
    specs: list[tuple[str, BackendSpec]], directory: Path
) -> tuple[list[DemoBackend], dict[str, str]]:
    """Start every backend (a taken port falls back to a free one); returns them and the
    address changes, already written into the policy files of `directory`."""
    started: list[DemoBackend] = []
    moved: dict[str, str] = {}
    try:
        for address, spec in specs:
            backend = DemoBackend(spec)
            try:
                await backend.start()
            except OSError:
                if spec.port == 0:
                    raise
                backend = DemoBackend(dataclasses.replace(spec, port=0))
                await backend.start()
            started.append(backend)
            if backend.address != address:
                moved[address] = backend.address
    except BaseException:
        for backend in started:
            await backend.stop()
        raise
    if moved:
        _rewrite(directory, moved)
    return started, moved


def _rewrite(directory: Path, moved: dict[str, str]) -> None:
    for path in sorted(directory.rglob("*")):
        if path.suffix not in (".yaml", ".yml") or not path.is_file():
            continue
        text = original = path.read_text()
        for old, new in moved.items():
            text = re.sub(rf"(?<![\d.]){re.escape(old)}(?!\d)", new, text)
        if text != original:
            path.write_text(text)


async def demo(args: argparse.Namespace, live: Path) -> int:
    specs = backend_specs(live, any_port=args.backend_ports == "any")
    backends, moved = await start_backends(specs, live)
    for backend in backends:
        if backend.spec.version == "v2":
            backend.set_error_rate(args.canary_errors)
    try:
        try:
            settings = RunSettings.from_args(args, live)
        except ValueError as exc:
            print(f"fleetgate demo: {exc}", file=sys.stderr)
            return 2
        pipeline = PolicyPipeline(
            live,
            poll_interval_s=settings.poll_interval_s,
            debounce_s=settings.debounce_s,
            releases=settings.releases.settings,
            dns=settings.dns,
            freeze_tables=True,
        )
        if not await pipeline.start("fleetgate demo"):
            return 1
        stop = asyncio.Event()
        handle_signals(stop, pipeline.source.request_reload)
        embedded = Embedded(settings, pipeline)
        async with (
            release_service.operator_api(
                settings.releases, pipeline.runner, program="fleetgate demo"
            ) as api_address,
            asyncio.TaskGroup() as tg,
        ):
            tg.create_task(embedded.serve(stop), name="demo.serve")
            await embedded.process.listening.wait()
            print(intro(embedded, live, backends, moved, api_address), flush=True)
            if args.traffic:
                print(await send_traffic(embedded.listen, args.traffic), flush=True)
            if args.exit:
                stop.set()
            else:
                print("serving; edit the policies above or press Ctrl-C to stop", flush=True)
    finally:
        for backend in reversed(backends):
            await backend.stop()
    return 0


def intro(
    embedded: Embedded,
    live: Path,
    backends: list[DemoBackend],
    moved: dict[str, str],
    api_address: str | None = None,
) -> str:
    gw = f"http://{embedded.listen}"
    admin = embedded.process.admin_address
    by_cluster: dict[str, dict[str, list[str]]] = {}
    for backend in backends:
        spec = backend.spec
        services = by_cluster.setdefault(spec.cluster, {})
        services.setdefault(f"{spec.service} ({spec.version})", []).append(backend.address)
    lines = [
        "fleetgate demo: member clusters on loopback behind one gateway",
        "",
        f"  gateway   {gw}" + (f"    admin http://{admin}" if admin else ""),
        f"  policies  {live}",
        "            (a live copy of examples/fleet: edit it and the gateway reloads;",
        "             removed when the demo stops)",
        "  clusters  (demo servers answering with their cluster, version and pod)",
    ]
    for cluster, services in by_cluster.items():
        for n, (name, addresses) in enumerate(services.items()):
            lines.append(f"    {cluster if n == 0 else '':<8}{name:<14}{', '.join(addresses)}")
    if moved:
        lines.append(f"  ({len(moved)} endpoint(s) moved to free ports; the copy says where)")
    lines += [
        "",
        "Try:",
        "  # weighted split: 3/4 east, 1/4 west (eu takes traffic only on failover)",
        f"  curl -s -H 'Host: {SHOP}' {gw}/",
        "  # header canary: testers always get web-v2",
        f"  curl -s -H 'Host: {SHOP}' -H '{CANARY_HEADER[0]}: {CANARY_HEADER[1]}' {gw}/",
        "  # redirect: /old/... moved permanently to /new/...",
        f"  curl -si -H 'Host: {SHOP}' {gw}/old/cart",
        "  # an HTTPRoute: the public API",
        f"  curl -s -H 'Host: {API}' {gw}/v1/orders",
    ]
    if admin:
        lines += [
            "  # what the gateway serves, and its metrics",
            f"  curl -s http://{admin}/status",
            f"  curl -s http://{admin}/metrics | grep fleetgate_route_requests_total",
        ]
    if api_address:
        lines += [
            "  # a release: web -> web-v2 in steps (docs/release-walkthrough.md); the token is",
            "  # printed above (or use yours: FLEETGATE_TOKEN)",
            f"  export FLEETGATE_SERVER=http://{api_address}",
            "  fleetgate release start shop/web-v2-rollout",
            "  fleetgate release status shop/web-v2-rollout --watch",
        ]
    return "\n".join(lines) + "\n"


async def send_traffic(listen: str, count: int, *, concurrency: int = 10) -> str:
    """Send `count` requests to the shop (and a few with the canary header); the split table."""
    split: collections.Counter[tuple[str, str]] = collections.Counter()
    canary: collections.Counter[tuple[str, str]] = collections.Counter()
    failed = 0
    url = f"http://{listen}/"
    canaries = max(1, count // 10)
    queue = [False] * count + [True] * canaries
    timeout = aiohttp.ClientTimeout(total=10)

    async def one(session: aiohttp.ClientSession, pinned: bool) -> None:
        nonlocal failed
        headers = {"Host": SHOP}
        if pinned:
            headers[CANARY_HEADER[0]] = CANARY_HEADER[1]
        try:
            async with session.get(url, headers=headers, timeout=timeout) as resp:
                await resp.read()
                if resp.status != 200:
                    failed += 1
                    return
                key = (resp.headers.get("x-cluster", "?"), resp.headers.get("x-version", "?"))
                (canary if pinned else split)[key] += 1
        except (aiohttp.ClientError, TimeoutError):
            failed += 1

    async with aiohttp.ClientSession() as session:
        for start in range(0, len(queue), concurrency):
            async with asyncio.TaskGroup() as tg:
                for pinned in queue[start : start + concurrency]:
                    tg.create_task(one(session, pinned))
    lines = [f"traffic: {count} requests to {SHOP}/ through {url}", ""]
    lines += _table(split, count)
    lines += [
        "",
        f"header canary ({CANARY_HEADER[0]}: {CANARY_HEADER[1]}): {canaries} requests",
        "",
    ]
    lines += _table(canary, canaries)
    if failed:
        lines += ["", f"failed: {failed}"]
    return "\n".join(lines) + "\n"


def _table(counts: collections.Counter[tuple[str, str]], total: int) -> list[str]:
    rows = [f"  {'cluster':<8} {'version':<8} {'requests':>8} {'share':>7}"]
    for (cluster, version), n in sorted(counts.items()):
        share = 100.0 * n / total if total else 0.0
        rows.append(f"  {cluster:<8} {version:<8} {n:>8} {share:>6.1f}%")
    return rows
