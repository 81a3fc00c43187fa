"""Real `fleetgate` processes for tests: policy directories to serve, start-up, signals, stop.

A process's stderr goes to a file (never a pipe that could fill up); the start-up banner there
gives the bound listen and admin addresses, since tests ask for port 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
from pathlib import Path

from tests.conftest import eventually

BANNER = re.compile(r"listening on http://(\S+?)(?: with \d+ workers)?, admin http://(\S+?) ")


def policy_text(*, east: str, west: str, edit: int, weights: tuple[int, int] = (1, 1)) -> str:
    """Two member clusters (one endpoint each) and one TrafficPolicy for `shop.test`.

    Every version answers `/` (split by `weights`, east then west) with `x-edit: <edit>` on the
    response, and has one extra rule on `/edit-<edit>`: consecutive edits differ in weights,
    paths and headers, while `/` and `/always` stay served by all of them.
    """
    return f"""\
apiVersion: fleetgate.io/v1alpha1
kind: MemberCluster
metadata: {{name: east}}
spec:
  services:
    - namespace: shop
      name: web
      ports:
        - port: 80
          endpoints: ["{east}"]
---
apiVersion: fleetgate.io/v1alpha1
kind: MemberCluster
metadata: {{name: west}}
spec:
  services:
    - namespace: shop
      name: web
      ports:
        - port: 80
          endpoints: ["{west}"]
---
apiVersion: fleetgate.io/v1alpha1
kind: TrafficPolicy
metadata: {{name: storefront, namespace: shop}}
spec:
  hostnames: [shop.test]
  rules:
    - name: web
      matches:
        - path: {{type: PathPrefix, value: /}}
      filters:
        - type: ResponseHeaderModifier
          responseHeaderModifier:
            set:
              - {{name: x-edit, value: "{edit}"}}
      backendRefs:
        - name: web
          port: 80
          clusters:
            - {{name: east, weight: {weights[0]}}}
            - {{name: west, weight: {weights[1]}}}
    - name: extra
      matches:
        - path: {{type: PathPrefix, value: /edit-{edit}}}
      backendRefs:
        - {{name: web, port: 80}}
"""


# A document that parses as YAML but breaks the schema (negative weight) at a known position.
BROKEN = """\
apiVersion: fleetgate.io/v1alpha1
kind: TrafficPolicy
metadata: {name: broken, namespace: shop}
spec:
  hostnames: [broken.test]
  rules:
    - backendRefs:
        - {name: web, port: 80, weight: -1}
"""
BROKEN_PROBLEM = re.compile(r"broken\.yaml:8:\d+: spec\.rules\[0\]\.backendRefs\[0\]\.weight")


def write_atomically(path: Path, text: str) -> None:
    """Replace a policy file the way editors and ConfigMap updates do (rename over it)."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    temp.replace(path)


class FleetgateProcess:
    """`python -m fleetgate ARGS` with stderr in `log`; `start()` waits for the banner."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.listen = ""
        self.admin = ""

    async def start(
        self, *, timeout_s: float = 30.0, banner: re.Pattern[str] = BANNER
    ) -> FleetgateProcess:
        """Start and wait for `banner`; its groups become `listen` (and `admin`)."""
        err = await asyncio.to_thread(open, self.log, "wb")
        with err:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "fleetgate",
                *self.args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err,
            )

        def announced() -> bool:
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise AssertionError(f"fleetgate exited early:\n{self.text()}")
            found = banner.search(self.text())
            if found:
                self.listen = found.group(1)
                self.admin = found.group(2) if banner.groups > 1 else ""
            return found is not None

        await eventually(announced, timeout_s=timeout_s, interval_s=0.05)
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def send(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, *, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        async with asyncio.timeout(timeout_s):
            return await self.proc.wait()

    async def close(self) -> None:
        """Stop it if it still runs (SIGTERM, then SIGKILL after a grace)."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(15):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
