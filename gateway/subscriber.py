"""Snapshot subscription: long-polls the controller, verifies, swaps, and keeps a disk cache.

HTTP client I/O (aiohttp) to the controller; file I/O for the cache, in worker threads.

The loop (DESIGN.md §1, static stability):

1. **Start-up** asks the controller once without waiting (`wait=0`, bounded by
   `startup_timeout_s`). When that brings no snapshot — controller unreachable, or it has none
   yet — the cached snapshot on disk is loaded instead, so a gateway restarted during a
   controller outage serves its last table rather than nothing.
2. **Long-poll**: `GET /v1/snapshot?after=<received>&checksum=<held>&applied=<applied>&
   gateway=<id>&zone=<z>`. A `200` body is decoded and verified by `policies.snapshot` (schema
   version and checksum) off the event loop, handed to the sink, and written to the cache
   atomically (temp file, fsync, rename, fsync of the directory). The applied version is reported
   by the very next poll.
3. **Deltas**: a `200` with `X-Fleetgate-Base` is a delta from the table held
   (`policies.delta`): only the changed spreads are decoded, the checksum is recombined from the
   held table's digests and verified, and the spreads are swapped into the held table. A delta
   that does not apply (another base, a checksum mismatch, a malformed body) is logged and the
   next poll, at once, asks for the full snapshot (`delta=0`): a wrong table is never served.
4. **The cache stays a full snapshot**: a full body is written as received; after deltas the
   table held is encoded and written once updates have been quiet for `cache_quiet_s` (encoding
   2 MB costs a tenth of a second that a burst of changes should not pay each time). A crash in
   that window leaves the previous full snapshot, older but whole and verified.
5. **Failures** (refused connection, timeout, 5xx) back off with full jitter between
   `backoff_base_s` and `backoff_max_s`; the live table keeps serving throughout. A snapshot that
   fails verification or that the sink refuses is logged and counted, and not fetched again
   (`after` moves past it) until a newer one is published.

Controller replicas are interchangeable (`controller.publishing`): whichever answers, the gateway
applies content that differs from its own. Versions come from each replica's clock, so one replica
may answer with a version below the one held; the sink only takes newer versions, so such a table
is handed to it renumbered one above the live one, while the controller is told the version it
published (`applied`), which is what its rollouts count.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import random
import threading
import time
from pathlib import Path

import aiohttp

from gateway import frozen_tables
from gateway.errors import GatewayError
from gateway.frozen_tables import FrozenTables
from gateway.sink import TableSink
from policies import delta
from policies import snapshot as wire
from policies.errors import PolicyError
from policies.table import RoutingTable

log = logging.getLogger(__name__)

VERSION_HEADER = "X-Fleetgate-Version"
BASE_HEADER = "X-Fleetgate-Base"


@dataclasses.dataclass(frozen=True, slots=True)
class SubscriberSettings:
    """How a gateway replica follows the controller (gateway process settings)."""

    controller_url: str  # base URL of the controller's snapshot API, e.g. "http://10.0.0.5:9080"
    gateway_id: str  # this gateway as the controller lists it (pod name, "host/worker-1", ...)
    zone: str | None = None  # topology zone, reported to the controller
    metrics_url: str | None = None  # admin /metrics URL, reported for the controller's analysis
    cache_path: Path | None = None  # last snapshot JSON, for start-up with the controller down
    token: str | None = None  # bearer token the controller's snapshot API requires, if any
    wait_s: float = 25.0  # long-poll length asked of the controller (it may cap it)
    read_margin_s: float = 10.0  # extra time beyond `wait_s` for the whole answer to arrive
    connect_timeout_s: float = 3.0  # TCP connect to the controller
    startup_timeout_s: float = 3.0  # the first fetch; the disk cache is used when it fails
    backoff_base_s: float = 0.2  # first retry delay after a failed poll (jittered)
    backoff_max_s: float = 10.0  # retry delay ceiling during a long outage
    cache_quiet_s: float = 2.0  # after a delta, write the full cache once updates pause this long


@dataclasses.dataclass(frozen=True, slots=True)
class SubscriberStatus:
    """What the admin port's `/status` and metrics show about the subscription."""

    applied: int  # version of the table handed to the sink; 0 = none yet
    source: str | None  # where that table came from: "controller" or "cache"
    received: int  # newest version fetched, whether applied or refused
    connected: bool  # the most recent request to the controller succeeded
    failures: int  # consecutive failed requests (0 while connected)
    refused: int  # snapshots that failed verification or that the sink refused
    last_error: str | None  # the most recent failure or refusal
    last_contact: float | None  # wall-clock time of the last successful request
    deltas: int  # snapshots applied as deltas
    delta_failures: int  # deltas that did not apply (each followed by a full fetch)


class Subscriber:
    """Owns the poll loop for one gateway process. Run it with `run()` until cancelled."""

    def __init__(
        self, settings: SubscriberSettings, sink: TableSink, *, frozen: FrozenTables | None = None
    ) -> None:
        self.settings = settings
        self._sink = sink
        self._frozen = frozen  # freezes each table it decodes (gateway.frozen_tables)
        self._applied = 0
        self._source: str | None = None
        self._received = 0
        self._connected = False
        self._failures = 0
        self._refused = 0
        self._last_error: str | None = None
        self._last_contact: float | None = None
        self._held: tuple[RoutingTable, wire.Digests] | None = None  # handed to the sink
        self._want_full = False  # the last delta did not apply: ask for the whole snapshot
        self._deltas = self._delta_failures = 0
        self._cache_wanted = asyncio.Event()  # the held table is newer than the cache file
        self._cache_lock = asyncio.Lock()  # one cache write at a time, in the order they began
        self._cached: str | None = None  # checksum of the table the cache file holds

    @property
    def status(self) -> SubscriberStatus:
        return SubscriberStatus(
            applied=self._applied,
            source=self._source,
            received=self._received,
            connected=self._connected,
            failures=self._failures,
            refused=self._refused,
            last_error=self._last_error,
            last_contact=self._last_contact,
            deltas=self._deltas,
            delta_failures=self._delta_failures,
        )

    async def run(self) -> None:
        """Fetch (or load the cache), then follow the controller until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._follow(), name="subscriber.poll")
            if self.settings.cache_path is not None:
                tg.create_task(self._write_cache_when_quiet(), name="subscriber.cache")

    async def _write_cache_when_quiet(self) -> None:
        """Write the held table as a full snapshot once deltas have paused (see 4. above)."""
        path = self.settings.cache_path
        assert path is not None
        while True:
            await self._cache_wanted.wait()
            while True:
                self._cache_wanted.clear()
                try:
                    async with asyncio.timeout(self.settings.cache_quiet_s):
                        await self._cache_wanted.wait()
                except TimeoutError:
                    break
            held, version = self._held, self._applied
            if held is None or held[1].checksum == self._cached:
                continue
            try:
                async with self._cache_lock:
                    await asyncio.to_thread(_write_table, path, held[0], version)
                self._cached = held[1].checksum
            except OSError as exc:
                log.warning("cannot cache snapshot path=%s: %s", path, exc)

    async def _follow(self) -> None:
        headers = {"Accept": "application/json", "User-Agent": "fleetgate-gateway"}
        if self.settings.token is not None:
            headers["Authorization"] = f"Bearer {self.settings.token}"
        async with aiohttp.ClientSession(headers=headers) as session:
            await self._poll(session, wait_s=0.0, timeout_s=self.settings.startup_timeout_s)
            if self._applied == 0:
                await self.load_cache()
            attempt = 0
            while True:
                try:
                    ok = await self._poll(
                        session,
                        wait_s=self.settings.wait_s,
                        timeout_s=self.settings.wait_s + self.settings.read_margin_s,
                    )
                # Top of the long-lived task: whatever goes wrong in one round, the gateway
                # keeps serving its table and the next round starts after a backoff.
                except Exception as exc:
                    self._last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("snapshot poll failed")
                    ok = False
                attempt = 0 if ok else attempt + 1
                if attempt:
                    await asyncio.sleep(self._backoff_s(attempt))

    def _backoff_s(self, attempt: int) -> float:
        """Full jitter (AWS architecture blog): uniform in [base, min(max, base * 2^attempt))."""
        base, ceiling = self.settings.backoff_base_s, self.settings.backoff_max_s
        return base + random.random() * max(
            0.0, min(ceiling, base * 2.0 ** min(attempt, 30)) - base
        )

    async def _poll(
        self, session: aiohttp.ClientSession, *, wait_s: float, timeout_s: float
    ) -> bool:
        """One request; True when the controller answered (200 or 304)."""
        params = {
            "after": str(self._received),
            "applied": str(self._applied),
            "gateway": self.settings.gateway_id,
            "wait": f"{wait_s:g}",
        }
        if self._held is not None:
            params["checksum"] = self._held[1].checksum
        if self._want_full:
            params["delta"] = "0"
        if self.settings.zone:
            params["zone"] = self.settings.zone
        if self.settings.metrics_url:
            params["metrics"] = self.settings.metrics_url
        url = self.settings.controller_url.rstrip("/") + "/v1/snapshot"
        timeout = aiohttp.ClientTimeout(total=timeout_s, connect=self.settings.connect_timeout_s)
        try:
            async with session.get(url, params=params, timeout=timeout) as resp:
                if resp.status == 304:
                    self._contact()
                    return True
                if resp.status != 200:
                    text = (await resp.text(errors="replace"))[:256]
                    self._fail(f"controller answered {resp.status}: {text.strip()}")
                    return False
                body = await resp.read()
                announced = resp.headers.get(VERSION_HEADER, "")
                base = resp.headers.get(BASE_HEADER)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._fail(f"cannot reach the controller at {url}: {str(exc) or type(exc).__name__}")
            return False
        self._contact()
        if base is None:
            self._want_full = False
            await self._accept(body, source="controller", announced=announced)
        else:
            await self._accept_delta(body, base)
        return True

    async def _accept_delta(self, body: bytes, base: str) -> None:
        """Apply a delta to the held table; on any failure, ask for the full snapshot next."""
        held = self._held
        try:
            if held is None or held[1].checksum != base:
                raise ValueError(f"it applies to {base[:12]}, not to the table held")
            apply = functools.partial(delta.apply_delta, held[0], held[1], body)
            table, digests = await asyncio.to_thread(frozen_tables.build, self._frozen, apply)
        except (PolicyError, ValueError, KeyError, TypeError) as exc:
            self._delta_failures += 1
            self._want_full = True
            log.warning("delta snapshot not applied, fetching the full one: %s", exc)
            return
        self._deltas += 1
        self._received = table.version
        if self._install(table, digests, "controller") and self.settings.cache_path is not None:
            self._cache_wanted.set()

    def _contact(self) -> None:
        if not self._connected and self._failures:
            log.info(
                "controller reachable again url=%s after_failures=%d",
                self.settings.controller_url,
                self._failures,
            )
        self._connected = True
        self._failures = 0
        self._last_contact = time.time()

    def _fail(self, message: str) -> None:
        self._connected = False
        self._failures += 1
        self._last_error = message
        # One warning per outage; the rest at debug so a long outage does not flood the log.
        level = logging.WARNING if self._failures == 1 else logging.DEBUG
        log.log(level, "%s; serving table version=%d", message, self._applied)

    async def _accept(self, body: bytes, *, source: str, announced: str = "") -> bool:
        """Verify `body`, hand it to the sink, cache it. False when refused."""
        try:
            decode = functools.partial(decode_digested, body)
            table, digests = await asyncio.to_thread(frozen_tables.build, self._frozen, decode)
        except (PolicyError, ValueError, KeyError, TypeError) as exc:
            if announced.isdigit():
                self._received = int(announced)
            return self._refuse(f"snapshot from {source} failed verification: {exc}")
        if source == "controller":
            self._received = table.version  # the answering replica's number, even if lower
        if source == "cache" and table.version <= self._applied:
            return self._refuse(
                f"snapshot v{table.version} from {source} is not newer than v{self._applied}"
            )
        if not self._install(table, digests, source):
            return False
        if source == "controller" and self.settings.cache_path is not None:
            self._cache_wanted.clear()  # this full body supersedes a pending write
            try:
                async with self._cache_lock:
                    await asyncio.to_thread(write_atomically, self.settings.cache_path, body)
                self._cached = digests.checksum
            except OSError as exc:
                log.warning("cannot cache snapshot path=%s: %s", self.settings.cache_path, exc)
        return True

    def _install(self, table: RoutingTable, digests: wire.Digests, source: str) -> bool:
        """Hand `table` to the sink (renumbered if a replica's clock put it below the live one)."""
        served = table
        held = self._held
        if held is not None and table.version <= held[0].version:
            if (table.version, table.checksum) == (self._applied, held[0].checksum):
                return True  # the table held, sent again: nothing to do
            served = dataclasses.replace(table, version=held[0].version + 1)
        try:
            self._sink.apply(served)
        except (GatewayError, ValueError) as exc:
            return self._refuse(f"gateway refused snapshot v{table.version}: {exc}")
        self._held = (served, digests)
        self._applied = table.version
        self._source = source
        log.info("applied snapshot version=%d source=%s", table.version, source)
        return True

    def _refuse(self, message: str) -> bool:
        self._refused += 1
        self._last_error = message
        log.error("%s; keeping table version=%d", message, self._applied)
        return False

    async def load_cache(self) -> bool:
        """Apply the cached snapshot, if there is a valid one newer than the live table."""
        path = self.settings.cache_path
        if path is None:
            return False
        try:
            body = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            log.info("no cached snapshot yet path=%s", path)
            return False
        except OSError as exc:
            log.warning("cannot read cached snapshot path=%s: %s", path, exc)
            return False
        log.warning("controller unavailable at start-up; loading cached snapshot path=%s", path)
        return await self._accept(body, source="cache")


def decode(body: bytes) -> RoutingTable:
    """JSON → verified table. CPU-bound; runs in a worker thread."""
    return wire.loads(body)


def decode_digested(body: bytes) -> tuple[RoutingTable, wire.Digests]:
    """`decode`, with the digests deltas are verified against."""
    return wire.loads_digested(body)


def _write_table(path: Path, table: RoutingTable, version: int) -> None:
    """Cache `table` as the full snapshot the controller published as `version`."""
    write_atomically(path, wire.encode(dataclasses.replace(table, version=version)))


def write_atomically(path: Path, body: bytes) -> None:
    """Replace `path` with `body` so a crash leaves the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(temp, "wb") as file:
            file.write(body)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)
