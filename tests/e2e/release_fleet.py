"""A release fleet of real processes for the release e2e tests: one `fleetgate controller -c DIR`
with the operator API and a state file, two `fleetgate gateway` replicas, and demo backends for
stable (`web`, v1) and canary (`web-v2`, v2) in two member clusters (east on 127.0.1.x, west on
127.0.2.x). Helpers drive releases through the API (or the CLI), wait for the fleet to apply
them, and count which version answered.

Every port the processes must know before the others start (controller, API, gateway admin
ports, Prometheus) is taken by binding port 0 and releasing it, so a restarted controller comes
back where the gateways look for it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import random
import re
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from controller import api_tokens
from fleetgate.demo_backend import BackendSpec, DemoBackend
from tests.conftest import eventually
from tests.running import FleetgateProcess

API_BANNER = re.compile(r"operator API on http://(\S+)")
RELEASE_TICK_S = 0.1
MAX_REQUESTS = 20_000  # no load loop below sends more than this, ...
MAX_LOAD_S = 60.0  # ... or runs longer than this
CONCURRENCY = 16
TIMEOUT = aiohttp.ClientTimeout(total=10)

# name, role, namespaces: the tokens file holds only their digests.
TOKENS = {
    "admin": ("alice", "admin", ()),
    "shop-dev": ("shop-ci", "developer", ("shop",)),
    "payments-dev": ("payments-ci", "developer", ("payments",)),
}


_given_ports: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing is bound to right now, for a child process to listen on.

    Chosen below the kernel's ephemeral range: a port taken from that range (bound to 0, then
    released) could be handed to another test's bind to port 0 before the child binds it, and
    the child would fail with "address in use" (seen once in a fresh clone's run). Ports below the
    range are only ever taken by an explicit bind. Never the same port twice in a process.
    """
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(low // 2, low)
        if port in _given_ports:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _given_ports.add(port)
        return port
    raise RuntimeError(f"no free port below {low} on {host}")


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (32768 when it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def policies(
    backends: dict[str, DemoBackend], releases: str, *, namespaces: Sequence[str] = ("shop",)
) -> str:
    """Two member clusters with web (v1) and web-v2 (v2) in every namespace of `namespaces`, the
    routes `storefront` (shop.test), `checkout` (bg.test) and `labs` (hdr.test) in each namespace
    (hostnames prefixed with "<namespace>." outside shop), all sending `/` to web; then
    `releases` (YAML documents)."""
    docs = []
    for cluster in ("east", "west"):
        services = []
        for namespace in namespaces:
            for name in ("web", "web-v2"):
                address = backends[f"{name}-{cluster}"].address
                services.append(
                    f"    - {{namespace: {namespace}, name: {name}, "
                    f'ports: [{{port: 80, endpoints: ["{address}"]}}]}}'
                )
        docs.append(
            "apiVersion: fleetgate.io/v1alpha1\nkind: MemberCluster\n"
            f"metadata: {{name: {cluster}}}\nspec:\n  services:\n" + "\n".join(services) + "\n"
        )
    for namespace in namespaces:
        for route, host in (
            ("storefront", "shop.test"),
            ("checkout", "bg.test"),
            ("labs", "hdr.test"),
        ):
            docs.append(
                "apiVersion: fleetgate.io/v1alpha1\nkind: TrafficPolicy\n"
                f"metadata: {{name: {route}, namespace: {namespace}}}\n"
                f"spec:\n  hostnames: [{host_in(namespace, host)}]\n"
                "  rules:\n    - backendRefs: [{name: web, port: 80}]\n"
            )
    return "---\n".join(docs) + "---\n" + releases


def host_in(namespace: str, host: str) -> str:
    return host if namespace == "shop" else f"{namespace}.{host}"


@dataclasses.dataclass
class Split:
    """Who answered a batch of requests."""

    versions: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    failed: int = 0

    @property
    def total(self) -> int:
        return sum(self.versions.values()) + self.failed

    def share(self, version: str = "v2") -> float:
        """Percent of all requests (failures included) answered by `version`."""
        return 100.0 * self.versions[version] / self.total if self.total else 0.0


@dataclasses.dataclass
class Load:
    """Background traffic until stopped; bounded by `MAX_REQUESTS` and `MAX_LOAD_S`."""

    split: Split = dataclasses.field(default_factory=Split)
    stop: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


@dataclasses.dataclass
class ReleaseFleet:
    tmp: Path
    directory: Path  # the policy directory
    backends: dict[str, DemoBackend]  # "web-east", "web-west", "web-v2-east", "web-v2-west"
    session: aiohttp.ClientSession
    controller_args: list[str]
    api: str  # "host:port"
    tokens: dict[str, str]  # TOKENS key -> token
    controller: FleetgateProcess | None = None
    gateways: list[FleetgateProcess] = dataclasses.field(default_factory=list)
    admins: list[str] = dataclasses.field(default_factory=list)  # gateways' admin addresses
    restarts: int = 0

    # -- processes -----------------------------------------------------------------------------

    async def start_controller(self) -> FleetgateProcess:
        self.restarts += 1
        process = FleetgateProcess(
            self.controller_args, self.tmp / f"controller-{self.restarts}.log"
        )
        self.controller = process
        return await process.start(banner=API_BANNER)

    async def kill_controller(self) -> None:
        """SIGKILL: no shutdown code runs, as when a node dies."""
        assert self.controller is not None
        assert self.controller.proc is not None
        self.controller.proc.kill()
        await self.controller.wait()

    # -- the operator API ----------------------------------------------------------------------

    async def call(
        self, method: str, path: str, *, token: str = "admin", **params: Any
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[token]}"}
        url = f"http://{self.api}/api/v1/{path}"
        query = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
        async with self.session.request(
            method, url, headers=headers, params=query, timeout=TIMEOUT
        ) as response:
            return response.status, await response.json()

    async def act(
        self, release: str, action: str, *, token: str = "admin", **params: Any
    ) -> dict[str, Any]:
        """Run an operator action; the release's status right after it."""
        status, body = await self.call(
            "POST", f"releases/{release}/{action}", token=token, **params
        )
        assert status == 200, (action, status, body)
        result: dict[str, Any] = body["release"]
        return result

    async def status(self, release: str) -> dict[str, Any]:
        status, body = await self.call("GET", f"releases/{release}")
        assert status == 200, body
        result: dict[str, Any] = body
        return result

    async def until(
        self,
        release: str,
        check: Callable[[dict[str, Any]], bool],
        *,
        timeout_s: float = 20.0,
        settled: bool = True,
        verdicts: list[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        """Poll the release's status until `check` holds (and, with `settled`, every gateway
        serves its latest overlay revision); that status. `verdicts` collects each analysis
        measurement seen meanwhile as (verdict, reason): the status shows the latest one, and
        polling at 50 ms sees every one of 1 s intervals (except a gate's final measurement,
        which enters the next step and clears the tally)."""
        seen: dict[str, Any] = {}
        counted: tuple[int, ...] = ()

        async def holds() -> bool:
            nonlocal seen, counted
            seen = await self.status(release)
            measured = seen.get("analysis") or {}
            key = tuple(measured.get(k, 0) for k in ("successes", "failures", "inconclusive"))
            if verdicts is not None and sum(key) and key != counted and measured.get("last"):
                verdicts.append((measured["last"]["verdict"], measured["last"]["reason"]))
            counted = key
            if settled and seen.get("applied_revision") != seen.get("revision"):
                return False
            return check(seen)

        try:
            await eventually(holds, timeout_s=timeout_s, interval_s=0.05)
        except AssertionError as exc:
            raise AssertionError(f"release {release} never got there; last status: {seen}") from exc
        return seen

    async def cli(self, *args: str, token: str = "admin") -> tuple[int, str, str]:
        """`fleetgate ARGS` against this fleet's API: (exit status, stdout, stderr)."""
        env = {"FLEETGATE_SERVER": f"http://{self.api}", "FLEETGATE_TOKEN": self.tokens[token]}
        return await run_cli(args, env)

    # -- traffic -------------------------------------------------------------------------------

    async def one(
        self, gateway: int, host: str, headers: dict[str, str] | None = None
    ) -> tuple[str | None, aiohttp.ClientResponse | None]:
        """One GET / through gateway `gateway`: (the answering version or None, the response)."""
        return await get_version(self.session, self.gateways[gateway].listen, host, headers)

    async def split(
        self, count: int, host: str = "shop.test", headers: dict[str, str] | None = None
    ) -> Split:
        """`count` requests, alternating between the two gateways."""
        listens = [g.listen for g in self.gateways]
        return await split_through(self.session, listens, count, host, headers)

    @contextlib.asynccontextmanager
    async def load(self, hosts: Sequence[str] = ("shop.test",)) -> AsyncIterator[Load]:
        """Steady background traffic to `hosts` through both gateways while inside."""
        load = Load()
        deadline = time.monotonic() + MAX_LOAD_S

        async def client(n: int) -> None:
            sent = 0
            while not load.stop.is_set() and sent * 4 < MAX_REQUESTS:
                if time.monotonic() > deadline:
                    return
                version, _ = await self.one(n % len(self.gateways), hosts[sent % len(hosts)])
                sent += 1
                if version is None:
                    load.split.failed += 1
                else:
                    load.split.versions[version] += 1

        async with asyncio.TaskGroup() as tg:
            for n in range(4):
                tg.create_task(client(n))
            try:
                yield load
            finally:
                load.stop.set()

    async def gateway_status(self, index: int) -> dict[str, Any]:
        async with self.session.get(
            f"http://{self.admins[index]}/status", timeout=TIMEOUT
        ) as response:
            body: dict[str, Any] = await response.json()
            return body

    def requests_to(self, name: str) -> int:
        """Application requests the backends of service `name` ("web" or "web-v2") answered."""
        return sum(b.requests for key, b in self.backends.items() if key.startswith(f"{name}-"))


async def get_version(
    session: aiohttp.ClientSession, listen: str, host: str, headers: dict[str, str] | None = None
) -> tuple[str | None, aiohttp.ClientResponse | None]:
    """One GET / through the gateway at `listen`: (the answering version or None, response)."""
    try:
        async with session.get(
            f"http://{listen}/", headers={"Host": host, **(headers or {})}, timeout=TIMEOUT
        ) as response:
            await response.read()
            if response.status != 200:
                return None, response
            return response.headers.get("x-version"), response
    except (aiohttp.ClientError, TimeoutError):
        return None, None


async def split_through(
    session: aiohttp.ClientSession,
    listens: Sequence[str],
    count: int,
    host: str,
    headers: dict[str, str] | None = None,
) -> Split:
    """`count` requests, spread in turn over the gateways at `listens`."""
    assert count <= MAX_REQUESTS
    result = Split()
    turns = asyncio.Semaphore(CONCURRENCY)

    async def request(n: int) -> None:
        async with turns:
            version, _ = await get_version(session, listens[n % len(listens)], host, headers)
        if version is None:
            result.failed += 1
        else:
            result.versions[version] += 1

    async with asyncio.timeout(MAX_LOAD_S):
        await asyncio.gather(*(request(n) for n in range(count)))
    return result


async def run_cli(args: Sequence[str], env: dict[str, str]) -> tuple[int, str, str]:
    """`fleetgate ARGS` with `env` added to the environment: (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleetgate", *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )  # fmt: skip
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def write_tokens(path: Path) -> dict[str, str]:
    """A tokens file for `TOKENS`; returns the tokens themselves."""
    tokens: dict[str, str] = {}
    lines = ["tokens:"]
    for key, (name, role, namespaces) in TOKENS.items():
        token = tokens[key] = api_tokens.new_token()
        spaces = ", ".join(namespaces)
        lines.append(
            f"  - {{name: {name}, role: {role}, namespaces: [{spaces}], "
            f"sha256: {api_tokens.hash_token(token)}}}"
        )
    path.write_text("\n".join(lines) + "\n")
    return tokens


def backend_specs() -> dict[str, BackendSpec]:
    return {
        "web-east": BackendSpec("east", "v1", host="127.0.1.1", service="web"),
        "web-west": BackendSpec("west", "v1", host="127.0.2.1", service="web"),
        "web-v2-east": BackendSpec("east", "v2", host="127.0.1.2", service="web-v2"),
        "web-v2-west": BackendSpec("west", "v2", host="127.0.2.2", service="web-v2"),
    }


@contextlib.asynccontextmanager
async def release_fleet(
    tmp: Path,
    releases: str,
    *,
    namespaces: Sequence[str] = ("shop",),
    gateway_metrics: bool = True,
) -> AsyncIterator[ReleaseFleet]:
    """Backends, the policy directory (see `policies`), the controller and two gateways.
    Without `gateway_metrics` the controller gets no `--gateway-metrics` list and finds the
    gateways' metrics through what they report when polling."""
    backends = {name: DemoBackend(spec) for name, spec in backend_specs().items()}
    controller_port, api_port = free_port(), free_port()
    admins = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    directory = tmp / "policies"
    directory.mkdir()
    async with contextlib.AsyncExitStack() as stack:
        for backend in backends.values():
            await backend.start()
            stack.push_async_callback(backend.stop)
        (directory / "fleet.yaml").write_text(policies(backends, releases, namespaces=namespaces))
        tokens = write_tokens(tmp / "tokens.yaml")
        controller_args = [
            "controller", "-c", str(directory), "--listen", f"127.0.0.1:{controller_port}",
            "--api", f"127.0.0.1:{api_port}", "--tokens", str(tmp / "tokens.yaml"),
            "--state", str(tmp / "state" / "releases.json"),
            "--release-tick", str(RELEASE_TICK_S), "--min-gateways", "2",
            "--poll-interval", "0.1", "--debounce", "0.05", "--log-level", "warning",
        ]  # fmt: skip
        for admin in admins if gateway_metrics else ():
            controller_args += ["--gateway-metrics", f"http://{admin}/metrics"]
        session = await stack.enter_async_context(
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64), cookie_jar=aiohttp.DummyCookieJar()
            )
        )
        fleet = ReleaseFleet(
            tmp=tmp,
            directory=directory,
            backends=backends,
            session=session,
            controller_args=controller_args,
            api=f"127.0.0.1:{api_port}",
            tokens=tokens,
            admins=admins,
        )
        stack.push_async_callback(_close_all, fleet)
        fleet.gateways = [
            FleetgateProcess(gateway_args(controller_port, admin, n, tmp), tmp / f"gw{n}.log")
            for n, admin in enumerate(admins, 1)
        ]
        await fleet.start_controller()
        await asyncio.gather(*(g.start() for g in fleet.gateways))
        yield fleet


def gateway_args(controller_port: int, admin: str, n: int, tmp: Path) -> list[str]:
    return [
        "gateway", "--controller", f"http://127.0.0.1:{controller_port}", "--listen", "127.0.0.1:0",
        "--admin", admin, "--id", f"gw{n}", "--cache-dir", str(tmp / f"cache-gw{n}"),
        "--log-level", "warning",
    ]  # fmt: skip


async def _close_all(fleet: ReleaseFleet) -> None:
    processes = [*fleet.gateways, *([fleet.controller] if fleet.controller else [])]
    await asyncio.gather(*(p.close() for p in processes))
