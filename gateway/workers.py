"""`--workers N`: N gateway processes on one port (SO_REUSEPORT), one admin port for all of them.
I/O: child processes, a reserved listening port, unix-socket HTTP to each worker's admin app.

How it fits together (DESIGN.md §2, "one gateway process per core"):

* **Tables**: each worker is an ordinary replica (`python -m gateway`, gateway.replica) that
  subscribes to a snapshot API like any gateway in the fleet. Under `fleetgate run` that API is
  the embedded controller in the parent, on an internal loopback port; under `fleetgate gateway`
  it is the real controller. So every worker serves the same versions, `/v1/gateways` lists
  each worker, and a release step waits for all of them, with no table-passing code of its own.
* **The ports**: the parent binds the listen address (and the TLS one) with SO_REUSEPORT first
  (without listening), which fixes the port when 0 was asked for and reports "address in use"
  before any worker starts; the workers bind the same addresses with SO_REUSEPORT and the
  kernel spreads connections over them. A worker binds only after it applied its first table.
* **Per-process settings**: every worker gets the same flags as a single process would: TLS
  certificate files (each worker loads them and polls them for changes itself, so a replaced
  certificate reaches every worker within a second or so), the drain delay, the gateway config
  file (each reads it), the zone. The admin token guards the parent's admin port only: the
  workers' admin sockets live in a directory only this user can enter, and the token is kept
  out of their argv and environment. The snapshot API token reaches them by their environment
  (`FLEETGATE_SNAPSHOT_TOKEN`), not their argv, which other local users can read.
* **Metrics and status**: each worker serves its admin app on a unix socket in a private
  directory. The parent's admin port asks all of them at scrape time (`/counters`, `/status`,
  `/readyz`) and adds the counters up (gateway.metrics): the exact totals of the moment, every
  requests series labelled with its `worker`, no shared memory and no staleness.
* **Supervision**: a worker that dies is restarted after a short pause (logged). Workers watch
  the parent's pid and exit if it disappears. On stop the parent fails readiness, sends SIGTERM
  (each worker drains as a single process would) and SIGKILLs what is left after the drain
  timeout plus a margin.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import aiohttp

from gateway import metrics
from gateway.admin import StatusPart, bound_address, start_admin
from gateway.metrics import ReloadStats, Snapshot
from gateway.settings import CertificateFiles

log = logging.getLogger(__name__)

_ASK_TIMEOUT_S = 3.0  # one worker's admin answer
_RESTART_PAUSE_S = 1.0
_KILL_MARGIN_S = 5.0


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerSettings:
    """The worker processes (process settings of the parent)."""

    count: int
    listen: tuple[str, int]  # (host, port); port 0 = any, chosen once for all workers
    controller_url: str  # snapshot API every worker subscribes to
    gateway_id: str  # worker i reports itself as f"{gateway_id}/worker-{i}"
    zone: str | None = None
    access_log: bool = False
    drain_timeout_s: float = 10.0
    cache_dir: Path | None = None  # each worker keeps its snapshot cache here
    token: str | None = None
    python: str = sys.executable
    tls_listen: tuple[str, int] | None = None  # HTTPS listener; port 0 = any, chosen once
    certificates: tuple[CertificateFiles, ...] = ()  # for `tls_listen`, the first the default
    drain_delay_s: float = 0.0  # each worker keeps accepting this long after readiness fails
    gateway_config: Path | None = None  # each worker reads it (policies.gatewayconfig)
    admin_token: str | None = None  # the parent's admin port (see the module docstring)


class WorkerPool:
    """Starts, supervises and stops the workers. `start()`, then `run()` until `stop()`."""

    def __init__(self, settings: WorkerSettings) -> None:
        if settings.count < 1:
            raise ValueError(f"workers must be at least 1, got {settings.count}")
        self.settings = settings
        self._reserved: list[socket.socket] = []
        self._dir: Path | None = None
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = False
        self.restarts = 0
        self.port = settings.listen[1]
        self.tls_port = settings.tls_listen[1] if settings.tls_listen else 0

    @property
    def listen(self) -> str:
        return f"{self.settings.listen[0]}:{self.port}"

    @property
    def tls_listen(self) -> str | None:
        tls = self.settings.tls_listen
        return None if tls is None else f"{tls[0]}:{self.tls_port}"

    def socket_path(self, index: int) -> Path:
        assert self._dir is not None
        return self._dir / f"worker-{index}.sock"

    async def start(self) -> None:
        """Reserve the ports and start every worker (they bind once they have a table)."""
        self.port = self._reserve(self.settings.listen)
        if self.settings.tls_listen is not None:
            self.tls_port = self._reserve(self.settings.tls_listen)
        self._dir = Path(tempfile.mkdtemp(prefix="fleetgate-workers-"))
        for index in range(self.settings.count):
            await self._spawn(index)

    def _reserve(self, address: tuple[str, int]) -> int:
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        reserved = socket.socket(family, socket.SOCK_STREAM)
        try:
            reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            reserved.bind((host, port))
        except OSError:
            reserved.close()
            raise
        self._reserved.append(reserved)
        bound: int = reserved.getsockname()[1]
        return bound

    def _argv(self, index: int) -> list[str]:
        s = self.settings
        argv = [
            s.python, "-m", "gateway",
            "--controller", s.controller_url,
            "--listen", self.listen,
            "--reuse-port",
            "--admin", f"unix:{self.socket_path(index)}",
            "--id", f"{s.gateway_id}/worker-{index}",
            "--worker", str(index),
            "--parent-pid", str(os.getpid()),
            "--drain-timeout", str(s.drain_timeout_s),
            "--drain-delay", str(s.drain_delay_s),
        ]  # fmt: skip
        if s.zone:
            argv += ["--zone", s.zone]
        if s.access_log:
            argv.append("--access-log")
        if s.cache_dir is not None:
            argv += ["--cache-dir", str(s.cache_dir)]
        if self.tls_listen is not None:
            argv += ["--tls-listen", self.tls_listen]
            for pair in s.certificates:
                argv += ["--tls-cert", pair.cert_file, "--tls-key", pair.key_file]
        if s.gateway_config is not None:
            argv += ["--gateway-config", str(s.gateway_config)]
        return argv

    async def _spawn(self, index: int) -> None:
        self.socket_path(index).unlink(missing_ok=True)
        # No admin token for the workers' private admin sockets (see the module docstring); the
        # snapshot API token goes by the environment, where `ps` does not show it.
        env = {k: v for k, v in os.environ.items() if k != "FLEETGATE_ADMIN_TOKEN"}
        env.pop("FLEETGATE_SNAPSHOT_TOKEN", None)
        if self.settings.token:
            env["FLEETGATE_SNAPSHOT_TOKEN"] = self.settings.token
        proc = await asyncio.create_subprocess_exec(*self._argv(index), env=env)
        self._procs[index] = proc
        log.info("worker started index=%d pid=%d", index, proc.pid)

    async def run(self) -> None:
        """Supervise until cancelled: a worker that exits unasked is started again."""
        async with asyncio.TaskGroup() as tg:
            for index in list(self._procs):
                tg.create_task(self._supervise(index), name=f"workers.supervise.{index}")

    async def _supervise(self, index: int) -> None:
        while True:
            proc = self._procs[index]
            code = await proc.wait()
            if self._stopping:
                return
            self.restarts += 1
            log.error("worker exited index=%d pid=%d status=%s; restarting", index, proc.pid, code)
            await asyncio.sleep(_RESTART_PAUSE_S)
            if self.stopping:
                return
            await self._spawn(index)

    async def stop(self) -> bool:
        """SIGTERM every worker, wait for the drain, SIGKILL the rest. True if all exited clean."""
        self._stopping = True
        for proc in self._procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        s = self.settings
        deadline = time.monotonic() + s.drain_delay_s + s.drain_timeout_s + _KILL_MARGIN_S
        clean = True
        for index, proc in self._procs.items():
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    code = await proc.wait()
            except TimeoutError:
                log.error("worker did not stop in time index=%d pid=%d; killing", index, proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                code = await proc.wait()
            clean = clean and code == 0
        self.close()
        return clean

    def close(self) -> None:
        for reserved in self._reserved:
            reserved.close()
        self._reserved.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    @property
    def started(self) -> bool:
        return self._dir is not None

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def pids(self) -> dict[int, int]:
        return {index: proc.pid for index, proc in self._procs.items()}


class WorkersView:
    """The parent's `AdminView`: asks every worker's admin socket and adds up."""

    def __init__(
        self,
        pool: WorkerPool,
        *,
        parts: Mapping[str, StatusPart] | None = None,
        reload: Callable[[], ReloadStats | None] | None = None,
    ) -> None:
        self.pool = pool
        self.parts = dict(parts or {})
        self.reload = reload
        self.draining = False
        self.admin_address: str | None = None  # the parent's admin port, once bound
        self._sessions: dict[int, aiohttp.ClientSession] = {}

    def _session(self, index: int) -> aiohttp.ClientSession:
        session = self._sessions.get(index)
        if session is None or session.closed:
            connector = aiohttp.UnixConnector(path=str(self.pool.socket_path(index)))
            session = self._sessions[index] = aiohttp.ClientSession(connector=connector)
        return session

    async def _ask(self, index: int, path: str) -> tuple[int, Any]:
        """(status, decoded JSON or text) from worker `index`; (0, error text) on failure."""
        if not self.pool.started:
            return 0, "workers not started"
        timeout = aiohttp.ClientTimeout(total=_ASK_TIMEOUT_S)
        try:
            async with self._session(index).get(f"http://worker{path}", timeout=timeout) as resp:
                if resp.content_type == "application/json":
                    return resp.status, await resp.json()
                return resp.status, (await resp.text()).strip()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return 0, f"worker {index} unreachable: {str(exc) or type(exc).__name__}"

    async def _ask_all(self, path: str) -> list[tuple[int, Any]]:
        indexes = range(self.pool.settings.count)
        return list(await asyncio.gather(*(self._ask(i, path) for i in indexes)))

    async def not_ready(self) -> str | None:
        if self.draining:
            return "draining"
        answers = await self._ask_all("/readyz")
        for index, (status, text) in enumerate(answers):
            if status != 200:
                return f"worker {index}: {text}"
        return None

    async def counters(self) -> list[Snapshot]:
        return [cast(Snapshot, s) for status, body in await self._ask_all("/counters")
                if status == 200 for s in body]  # fmt: skip

    async def metrics(self) -> bytes:
        return metrics.render(await self.counters(), self.reload() if self.reload else None)

    async def status(self) -> dict[str, Any]:
        answers = await self._ask_all("/status")
        reason = await self.not_ready()
        body: dict[str, Any] = {
            "ready": reason is None,
            "not_ready": reason,
            "listen": self.pool.listen,
            "tls_listen": self.pool.tls_listen,
            "workers": [
                body if status == 200 else {"worker": str(i), "error": body}
                for i, (status, body) in enumerate(answers)
            ],
            "worker_pids": self.pool.pids,
            "worker_restarts": self.pool.restarts,
        }
        first = next((w for w in body["workers"] if "table" in w), None)
        if first is not None:  # what worker 0 serves; each worker's own is in "workers"
            for key in ("table", "routes", "clusters", "endpoints"):
                body[key] = first[key]
        for name, part in self.parts.items():
            body[name] = dict(part())
        return body

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()


async def supervise(
    pool: WorkerPool,
    view: WorkersView,
    *,
    admin: str | None,
    stop: asyncio.Event,
    feeders: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
) -> bool:
    """The parent's life: admin port, workers, `feeders` (the embedded controller), until
    `stop`; then readiness fails, workers drain and exit. True when every worker exited 0."""
    token = pool.settings.admin_token
    runner = await start_admin(view, admin, token=token) if admin else None
    clean = False
    try:
        if runner is not None:
            view.admin_address = bound_address(runner)
        await pool.start()
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(feed(), name=f"workers.feed.{i}") for i, feed in enumerate(feeders)
            ]
            tasks.append(tg.create_task(pool.run(), name="workers.run"))
            log.info("workers=%d listening on %s", pool.settings.count, pool.listen)
            await stop.wait()
            view.draining = True
            clean = await pool.stop()
            for task in tasks:
                task.cancel()
    finally:
        if not pool.stopping:
            await pool.stop()
        pool.close()
        await view.close()
        if runner is not None:
            await runner.cleanup()
    return clean
