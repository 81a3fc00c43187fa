"""Run a gateway in its own process for tests that measure it from outside (RSS).

    python -m tests.gateway.gateway_process --upstream 127.0.1.1:8080 [--loop uvloop]

Prints `READY <port>` once listening on 127.0.0.1:<ephemeral>, then serves `shop.test` → the
upstream until stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import uvloop

from gateway.server import Gateway
from gateway.settings import GatewaySettings, Listener
from tests.gateway import tables


async def serve(upstream: str) -> None:
    settings = GatewaySettings(listeners=(Listener("127.0.0.1", 0),))
    gateway = Gateway(settings, tables.single(upstream))
    await gateway.start()
    print("READY", gateway.addresses[0][1], flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the test closes our stdin
    await gateway.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    args = parser.parse_args()
    factory = uvloop.new_event_loop if args.loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(args.upstream))


if __name__ == "__main__":
    main()
