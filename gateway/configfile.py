"""Following the gateway config file (`--gateway-config`, policies.gatewayconfig): when the file
changes on disk, its new circuit breaker and namespace quotas replace the live ones. I/O: one
`stat` per interval, and a read when it changed.

Polled rather than signalled, like the TLS certificate files: a Kubernetes ConfigMap update
(an atomic symlink swap) reaches every gateway process, each `--workers N` worker included,
within about a second, with nothing to send. A file that does not parse changes nothing: the
limits in force stay, and the problems are logged once per change, as for a policy directory.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from policies.gatewayconfig import GatewayConfig, load_gateway_config

log = logging.getLogger(__name__)

Signature = tuple[int, int, int] | None  # (inode, mtime ns, size); None: unreadable


def signature(path: Path) -> Signature:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class ConfigFollower:
    """Calls `apply` with the config each time the file at `path` changes and parses."""

    def __init__(
        self, path: Path, apply: Callable[[GatewayConfig], None], *, interval_s: float = 1.0
    ) -> None:
        self.path = path
        self.apply = apply
        self.interval_s = interval_s
        self.seen = signature(path)  # the file as read at start-up
        self.applied = 0  # changes applied since start-up
        self.refused = 0  # changes that did not parse (the limits in force stayed)

    def check(self) -> None:
        now = signature(self.path)
        if now == self.seen:
            return
        self.seen = now
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.refused += 1
            log.error("gateway config unreadable path=%s error=%s; limits kept", self.path, exc)
            return
        config, problems = load_gateway_config(str(self.path), text)
        if config is None:
            self.refused += 1
            log.error(
                "gateway config refused; limits unchanged:\n%s",
                "\n".join(str(problem) for problem in problems),
            )
            return
        self.apply(config)
        self.applied += 1
        log.info(
            "gateway config applied path=%s namespace_quotas=%d max_requests=%d",
            self.path,
            len(config.namespace_quotas),
            config.breaker.max_requests,
        )

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.check()
