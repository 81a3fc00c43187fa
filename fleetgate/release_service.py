"""Releases in `fleetgate run` and `fleetgate controller -c DIR`: the flags, the runner's settings
and the operator API listener. Wiring only. I/O: the operator API's aiohttp server, the tokens file.

Both compositions put a `controller.releases.ReleaseRunner` between the file source and
reconcile (docs/operator_api.md), so a Release in the policy directory can be driven with
`fleetgate release ...` once `--api` serves the operator API:

* `--tokens FILE` holds the API's tokens as SHA-256 digests (`controller.api_tokens.Tokens`).
  Without it, an API bound to loopback gets one admin token made for this run and printed once
  on stderr (what `fleetgate demo` needs); an API on any other address refuses to start without
  it.
* `--state FILE` keeps every release's state across restarts (written atomically). Without it
  the state lives in memory: a restart forgets started releases and serves the files as written.
* Built-in analysis reads the gateways' admin `/metrics`: `fleetgate run` its own admin port;
  `fleetgate controller` the `--gateway-metrics` URLs (one per gateway) or, without any, the
  URLs live gateways report when they poll for snapshots (`fleetgate gateway --metrics-url`,
  by default derived from `--admin`). A Release with `analysis.prometheus` asks Prometheus
  instead and needs neither.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import ipaddress
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from controller import api, api_tokens
from controller.notify import NotifySettings
from controller.observations import ObservationSettings
from controller.releases import ReleaseRunner, ReleaseSettings
from fleetgate import process
from gateway.admin import split_address


def add_arguments(parser: argparse.ArgumentParser, *, controller: bool) -> None:
    """The release flags; `controller` adds the ones only a separate control plane needs."""
    group = parser.add_argument_group("releases and the operator API")
    group.add_argument(
        "--api", default=None, metavar="HOST:PORT",
        help="serve the operator API (`fleetgate release ...`) here; default: no API",
    )  # fmt: skip
    group.add_argument(
        "--tokens", type=Path, default=None, metavar="FILE",
        help="API tokens (YAML with SHA-256 digests, see docs/operator_api.md); without it an "
        "API on loopback gets a one-time admin token, printed at start-up",
    )  # fmt: skip
    group.add_argument(
        "--state", type=Path, default=None, metavar="FILE",
        help="release state file, so releases survive restarts; default: memory only",
    )  # fmt: skip
    group.add_argument(
        "--release-tick", type=float, default=1.0, metavar="S",
        help="how often releases advance when nothing else wakes them",
    )  # fmt: skip
    group.add_argument(
        "--auto-start", action="store_true",
        help="start each Release as soon as it appears in the policies (GitOps)",
    )  # fmt: skip
    group.add_argument(
        "--notify-url", default=None, metavar="URL",
        help="POST a JSON event here on every release phase change",
    )  # fmt: skip
    if not controller:
        return
    group.add_argument(
        "--gateway-metrics", action="append", default=[], metavar="URL",
        help="a gateway's admin /metrics URL, read by built-in release analysis (repeat per "
        "gateway); default: the URLs the live gateways report",
    )  # fmt: skip
    group.add_argument(
        "--metrics-token", default=os.environ.get("FLEETGATE_ADMIN_TOKEN"), metavar="TOKEN",
        help="bearer token for the gateways' admin ports (default: $FLEETGATE_ADMIN_TOKEN)",
    )  # fmt: skip
    group.add_argument(
        "--min-gateways", type=int, default=1, metavar="N",
        help="a release step counts as applied only with at least N live gateways",
    )  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True)
class ReleaseOptions:
    """The release side of `run` / `controller` (process settings)."""

    settings: ReleaseSettings = dataclasses.field(default_factory=ReleaseSettings)
    api: tuple[str, int] | None = None  # operator API listener; None = no API
    tokens: Path | None = None  # tokens file; None = a one-time admin token (loopback API only)

    @classmethod
    def from_args(cls, args: argparse.Namespace, *, metrics_token: str | None) -> ReleaseOptions:
        """Raises ValueError on a bad flag. `metrics_token` is for the gateways' admin ports."""
        address = split_address(args.api) if args.api else None
        if address is not None and args.tokens is None and not _loopback(address[0]):
            raise ValueError("--api on a non-loopback address needs --tokens FILE")
        if args.release_tick <= 0:
            raise ValueError(f"--release-tick must be positive, got {args.release_tick}")
        min_gateways = getattr(args, "min_gateways", 1)
        if min_gateways < 1:
            raise ValueError(f"--min-gateways must be at least 1, got {min_gateways}")
        settings = ReleaseSettings(
            state_file=args.state,
            tick_interval_s=args.release_tick,
            min_gateways=min_gateways,
            auto_start=args.auto_start,
            observations=ObservationSettings(
                metrics_urls=tuple(getattr(args, "gateway_metrics", ())),
                token=getattr(args, "metrics_token", None) or metrics_token,
            ),
            notify=NotifySettings(url=args.notify_url),
        )
        return cls(settings=settings, api=address, tokens=args.tokens)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_tokens(options: ReleaseOptions) -> tuple[api_tokens.Tokens, str | None]:
    """The API's tokens, and the one-time admin token when there is no tokens file.
    Raises `api_tokens.TokenFileError`."""
    if options.tokens is not None:
        return api_tokens.Tokens.from_file(options.tokens), None
    token = api_tokens.new_token()
    entry = api_tokens.TokenEntry(
        name="admin", sha256=api_tokens.hash_token(token), role=api_tokens.ADMIN
    )
    return api_tokens.Tokens([entry]), token


@contextlib.asynccontextmanager
async def operator_api(
    options: ReleaseOptions, runner: ReleaseRunner, *, program: str
) -> AsyncIterator[str | None]:
    """Serve the operator API while inside; yields its bound "host:port" (None without `--api`).
    Raises `api_tokens.TokenFileError` and OSError (address in use) before yielding."""
    if options.api is None:
        yield None
        return
    tokens, one_time = load_tokens(options)
    host, port = options.api
    async with process.serve_app(api.build_app(runner, tokens), host, port) as bound:
        address = f"{bound[0]}:{bound[1]}"
        announce_api(address, one_time, program=program)
        yield address


def announce_api(address: str, one_time: str | None, *, program: str) -> None:
    """Say where the operator API is, and the one-time admin token if there is one."""
    print(f"{program}: operator API on http://{address}", file=sys.stderr, flush=True)
    if one_time is not None:
        print(
            f"{program}: admin token for this run (use --tokens FILE for lasting ones):\n"
            f"  export FLEETGATE_SERVER=http://{address} FLEETGATE_TOKEN={one_time}",
            file=sys.stderr,
            flush=True,
        )
