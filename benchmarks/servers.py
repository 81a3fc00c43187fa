"""The servers of a side-by-side run: the shared nginx backend and each proxy under test, as
argv lists plus the config files they read (written into a scratch directory).

Every proxy gets the same work: listen on 127.0.0.1, forward every request to the one backend
over kept-alive upstream connections, optionally write an access log to a file.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from benchmarks import route_table

CONFIGS = Path(__file__).parent / "configs"
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def _backend_body() -> str:
    """The baseline's response: exactly 104 bytes of valid JSON (padded inside the object)."""
    head = '{"status":"ok","service":"bench","cluster":"local","version":"v1","pod":"b-0","pad":"'
    return head + "x" * (104 - len(head) - 2) + '"}'


BACKEND_BODY = _backend_body()


def render(template: str, values: Mapping[str, object]) -> str:
    """Fill `{{name}}` placeholders; every placeholder must have a value."""
    text = (CONFIGS / template).read_text()
    missing = sorted({m.group(1) for m in _PLACEHOLDER.finditer(text)} - values.keys())
    if missing:
        raise KeyError(f"{template}: no value for {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)


@dataclasses.dataclass(frozen=True, slots=True)
class Launch:
    """How to start one server and how to reach the route the load should hit."""

    name: str
    argv: list[str]
    port: int
    host_header: str = "bench.test"
    path: str = "/api/items"
    admin_port: int | None = None  # fleetgate's admin port (/metrics), None for the others


def _scratch(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (directory / sub).mkdir(exist_ok=True)
    return directory


def backend(directory: Path, *, port: int) -> Launch:
    work = _scratch(directory)
    conf = work / "nginx.conf"
    conf.write_text(render("nginx_backend.conf", {"dir": work, "port": port, "body": BACKEND_BODY}))
    return Launch(
        "backend", ["nginx", "-p", str(work), "-e", str(work / "error.log"), "-c", str(conf)], port
    )


def nginx_proxy(
    directory: Path, *, port: int, backend_port: int, workers: int, access_log: bool
) -> Launch:
    work = _scratch(directory)
    conf = work / "nginx.conf"
    values = {
        "dir": work,
        "port": port,
        "backend_port": backend_port,
        "workers": workers,
        "access_log": f"{work / 'access.log'}" if access_log else "off",
    }
    conf.write_text(render("nginx_proxy.conf", values))
    return Launch(
        "nginx", ["nginx", "-p", str(work), "-e", str(work / "error.log"), "-c", str(conf)], port
    )


def haproxy(
    directory: Path,
    *,
    port: int,
    backend_port: int,
    workers: int,
    access_log: bool,
    resilience: bool = False,
) -> Launch:
    work = _scratch(directory)
    conf = work / "haproxy.cfg"
    values = {
        "port": port,
        "backend_port": backend_port,
        "workers": workers,
        # With -db HAProxy stays in the foreground; its stdout goes to the log file.
        "global_log": "    log stdout format raw daemon" if access_log else "",
        "defaults_log": "    log global\n    option httplog" if access_log else "",
        # Resilience on: active health checks as fleetgate's (HAProxy already retries failed
        # connects, 3 times by default, and nginx retries and marks failing servers by default).
        "server_check": " check inter 5s" if resilience else "",
    }
    conf.write_text(render("haproxy.cfg", values))
    return Launch("haproxy", ["haproxy", "-db", "-f", str(conf)], port)


def fleetgate_command(python: str = sys.executable) -> list[str]:
    return [python, "-m", "fleetgate"]


def fleetgate_missing(command: list[str]) -> str | None:
    """Why `fleetgate run` cannot be benchmarked yet (None when it can)."""
    try:
        done = subprocess.run(
            [*command, "run", "--help"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {' '.join(command)}: {exc}"
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip()[-300:]
        return f"`{' '.join(command)} run` is not available: {said}"
    return None


def fleetgate(
    directory: Path,
    *,
    command: list[str],
    port: int,
    admin_port: int,
    backend_port: int,
    workers: int,
    access_log: bool,
    routes: int,
    resilience: bool = False,
) -> Launch:
    policies = directory / "policies"
    aim = route_table.write_policy_dir(
        policies, routes=routes, endpoint=f"127.0.0.1:{backend_port}", resilience=resilience
    )
    argv = [
        *command,
        "run",
        "-c",
        str(policies),
        "--listen",
        f"127.0.0.1:{port}",
        "--admin",
        f"127.0.0.1:{admin_port}",
    ]
    if workers != 1:
        argv += ["--workers", str(workers)]
    if access_log:
        argv.append("--access-log")
    return Launch(
        "fleetgate", argv, port, host_header=aim.host, path=aim.path, admin_port=admin_port
    )
