"""The optional JSON access log: one line per finished exchange on the `gateway.access` logger.
I/O only through `logging` (and, when installed by the process, a buffered stream handler).

Fields: time (UTC, ms), client, method, host, path (the raw request target), status, bytes (sent
to the client, head included), duration_ms, route, cluster, endpoint, reason (local replies),
request_id. Header values other than Host are never logged (STYLE.md §3.8: no cookies or
credentials in logs).

A log call per request is the expensive part (a `LogRecord`, a handler lock); `BufferedHandler`
at least keeps the writes to one per batch of whole lines (at most PIPE_BUF bytes, so the lines
of several workers sharing a stdout pipe never interleave) instead of one per line, and the
process flushes it periodically and on exit. The writes block: a reader that stops reading
stalls the gateway, as with any logging to a pipe. Off by default; the benchmarks report it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import select
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, TextIO

from gateway.context import ExchangeObserver

if TYPE_CHECKING:
    from gateway.exchange import Exchange

LOGGER = "gateway.access"
log = logging.getLogger(LOGGER)


class AccessLog:
    """An `ExchangeObserver` that logs each exchange; `then` is called afterwards, if set."""

    __slots__ = ("_second", "_stamp", "then")

    def __init__(self, then: ExchangeObserver | None = None) -> None:
        self.then = then
        self._second = -1
        self._stamp = ""

    def exchange_done(self, exchange: Exchange) -> None:
        if log.isEnabledFor(logging.INFO):
            log.info(self.line(exchange))
        then = self.then
        if then is not None:
            then.exchange_done(exchange)

    def line(self, ex: Exchange) -> str:
        """The JSON line for `ex` (public for tests and custom handlers)."""
        now = time.time()
        fwd = ex.forward
        endpoint = ex.endpoint
        decided = ex.decided
        record = {
            "time": self._time(now),
            "client": ex.down.peer.decode("latin-1"),
            "method": ex.method.decode("latin-1"),
            "host": ex.host.decode("latin-1") if ex.host is not None else None,
            "path": ex.target.decode("latin-1"),
            "status": ex.status,
            "bytes": ex.sent_bytes,
            "duration_ms": round((time.perf_counter() - ex.started) * 1000, 3),
            "route": decided.route if decided is not None else None,
            "rule": decided.rule if decided is not None else None,
            "cluster": endpoint.cluster if endpoint is not None and fwd is not None else None,
            "endpoint": endpoint.address if endpoint is not None and fwd is not None else None,
            "reason": ex.reason,
            "request_id": ex.request_id.decode("latin-1") if ex.request_id is not None else None,
        }
        return json.dumps(record, separators=(",", ":"))

    def _time(self, now: float) -> str:
        second = int(now)
        if second != self._second:  # the formatted second is reused for every line within it
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((now - second) * 1000):03d}Z"


class BufferedHandler(logging.Handler):
    """Writes formatted records to `stream` in batches: at `capacity` lines, or on `flush()`.

    The owner calls `flush()` periodically (a fraction of a second) and `close()` at exit, so a
    line is late by at most that period and never lost on a clean shutdown.
    """

    def __init__(self, stream: TextIO | None = None, *, capacity: int = 256) -> None:
        super().__init__()
        self.stream = stream if stream is not None else sys.stdout
        self.capacity = capacity
        self._lines: list[str] = []
        self._write_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record))
        except Exception:  # logging's contract: a broken record is reported, never raised
            self.handleError(record)
            return
        if len(self._lines) >= self.capacity:
            self.flush()

    def flush(self) -> None:
        with self._write_lock:
            lines, self._lines = self._lines, []
            if not lines:
                return
            try:
                fd = self.stream.fileno()
            except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
                fd = -1
            try:
                if fd < 0:
                    self.stream.write("\n".join(lines) + "\n")
                    self.stream.flush()
                    return
                self.stream.flush()  # whatever went through the stream object goes first
                for chunk in _chunks(lines):
                    while chunk:
                        chunk = chunk[os.write(fd, chunk) :]
            except (OSError, ValueError):
                pass  # the stream is gone (closed pipe at exit): access lines are best effort

    def close(self) -> None:
        self.flush()
        super().close()


def _chunks(lines: list[str]) -> Iterator[bytes]:
    """Whole lines, at most PIPE_BUF bytes per chunk: the workers of `--workers N` share one
    stdout, and the kernel writes a chunk that size to a pipe without interleaving others'."""
    batch: list[bytes] = []
    size = 0
    for line in lines:
        data = line.encode() + b"\n"
        if batch and size + len(data) > select.PIPE_BUF:
            yield b"".join(batch)
            batch, size = [], 0
        batch.append(data)
        size += len(data)
    if batch:
        yield b"".join(batch)


def install(stream: TextIO | None = None) -> BufferedHandler:
    """Send `gateway.access` lines (bare JSON, one per line) to `stream` (stdout by default)."""
    handler = BufferedHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # access lines are their own stream, not mixed into the process log
    return handler
