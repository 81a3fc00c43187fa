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
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TextIO

from gateway.context import ExchangeObserver

if TYPE_CHECKING:
    from gateway.exchange import Exchange

LOGGER = "gateway.access"
log = logging.getLogger(LOGGER)


class AccessLog:
    """An `ExchangeObserver` that logs each exchange; `then` is called afterwards, if set.

    With `direct` (the handler `install` returned), lines go straight into that handler's buffer
    when it is the logger's only handler and INFO is enabled: the same lines in the same place,
    without building a `LogRecord` per request (about half the cost of a line). Otherwise, and
    as soon as someone adds another handler or raises the level, every line goes through
    `log.info` as usual.
    """

    __slots__ = ("_second", "_stamp", "direct", "then")

    def __init__(
        self, then: ExchangeObserver | None = None, *, direct: BufferedHandler | None = None
    ) -> None:
        self.then = then
        self.direct = direct
        self._second = -1
        self._stamp = ""

    def exchange_done(self, exchange: Exchange) -> None:
        direct = self.direct
        if direct is not None and log.handlers == [direct] and log.isEnabledFor(logging.INFO):
            direct.add(self.line(exchange))
        elif log.isEnabledFor(logging.INFO):
            log.info(self.line(exchange))
        then = self.then
        if then is not None:
            then.exchange_done(exchange)

    def line(self, ex: Exchange) -> str:
        """The JSON line for `ex` (public for tests and custom handlers).

        Formatted by hand (a dict plus `json.dumps` costs twice as much); every string that a
        client or upstream controls is escaped by the json module's own encoder.
        """
        fwd = ex.forward
        endpoint = ex.endpoint if fwd is not None else None
        decided = ex.decided
        host = ex.host
        request_id = ex.request_id
        return (
            f'{{"time":"{self._time(time.time())}",'
            f'"client":{_text(ex.down.peer.decode("latin-1"))},'
            f'"method":{_text(ex.method.decode("latin-1"))},'
            f'"host":{_text(host.decode("latin-1")) if host is not None else "null"},'
            f'"path":{_text(ex.target.decode("latin-1"))},'
            f'"status":{ex.status:d},"bytes":{ex.sent_bytes:d},'
            f'"duration_ms":{(time.perf_counter() - ex.started) * 1000:.3f},'
            f'"route":{_maybe(decided.route if decided is not None else None)},'
            f'"rule":{_maybe(decided.rule if decided is not None else None)},'
            f'"cluster":{_maybe(endpoint.cluster if endpoint is not None else None)},'
            f'"endpoint":{_maybe(endpoint.address if endpoint is not None else None)},'
            f'"reason":{_maybe(ex.reason)},'
            f'"request_id":'
            f"{_text(request_id.decode('latin-1')) if request_id is not None else 'null'}}}"
        )

    def _time(self, now: float) -> str:
        second = int(now)
        if second != self._second:  # the formatted second is reused for every line within it
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((now - second) * 1000):03d}Z"


def _maybe(value: str | None) -> str:
    return "null" if value is None else _text(value)


_text: Callable[[str], str] = json.encoder.encode_basestring  # quoted and escaped JSON string


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
            line = self.format(record)
        except Exception:  # logging's contract: a broken record is reported, never raised
            self.handleError(record)
            return
        self.add(line)

    def add(self, line: str) -> None:
        """Buffer one formatted line (what `emit` does after formatting)."""
        lines = self._lines
        lines.append(line)
        if len(lines) >= self.capacity:
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
