"""Start pinned server processes and always stop them: each runs in its own session under
`taskset`, logs to a file, and is ended by its own process-group id on exit, error or Ctrl-C."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

_STOP_GRACE_S = 5.0


class ServerFailed(RuntimeError):
    """A server exited early or never answered; the message carries its log's tail."""


class Supervisor:
    """Owns every process it started. Use as a context manager; `stop_all` is idempotent."""

    def __init__(self) -> None:
        self._procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def start(
        self, name: str, argv: Sequence[str], *, cpus: str, log: Path
    ) -> subprocess.Popen[bytes]:
        """Run `argv` pinned to `cpus` (children inherit the mask), output to `log`."""
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["taskset", "-c", cpus, *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as one, never by name
            )
        self._procs.append((name, proc, log))
        return proc

    def stop_all(self) -> None:
        procs, self._procs = self._procs, []
        for _, proc, _ in reversed(procs):
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_S
        for _, proc, _ in reversed(procs):
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=_STOP_GRACE_S)
            # Workers that outlived their parent are still in the group.
            _signal_group(proc, signal.SIGKILL)

    def check_alive(self) -> None:
        for name, proc, log in self._procs:
            if proc.poll() is not None:
                raise ServerFailed(f"{name} exited with {proc.returncode}:\n{log_tail(log)}")


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # pgid == pid thanks to start_new_session


def log_tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def http_get(port: int, *, host: str, path: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    """One GET to 127.0.0.1:port with a chosen Host header; (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_ready(
    name: str,
    proc: subprocess.Popen[bytes],
    log: Path,
    *,
    port: int,
    host: str,
    path: str,
    timeout_s: float = 20.0,
) -> bytes:
    """Poll until a GET through `port` answers 200 (bounded in time and tries); return the body."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    for _ in range(int(timeout_s / 0.05) + 1):
        if proc.poll() is not None:
            raise ServerFailed(f"{name} exited with {proc.returncode}:\n{log_tail(log)}")
        try:
            status, body = http_get(port, host=host, path=path)
            if status == 200:
                return body
            last = f"HTTP {status}: {body[:200]!r}"
        except OSError as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raise ServerFailed(f"{name} not ready on :{port} after {timeout_s}s ({last}):\n{log_tail(log)}")


def free_port() -> int:
    """A port free on 127.0.0.1 right now (bound to 0, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
