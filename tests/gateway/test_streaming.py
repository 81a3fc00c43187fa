"""Bodies stream both ways with back-pressure: memory per connection stays bounded."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator

import httptools
import pytest

from tests.conftest import eventually
from tests.gateway import tables, wire
from tests.gateway.conftest import StartApp, StartGateway

MIB = 1024 * 1024
BODY_BYTES = 100 * MIB
RSS_GROWTH_LIMIT = 32 * MIB


class _BodyCounter:
    """Counts response body bytes without keeping them (httptools parser callbacks)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.received = 0
        self.complete = False

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.received += len(body)

    def on_message_complete(self) -> None:
        self.complete = True


async def _read_response(reader: asyncio.StreamReader) -> _BodyCounter:
    counter = _BodyCounter()
    while not counter.complete:
        data = await reader.read(256 * 1024)
        if not data:
            break
        counter.parser.feed_data(data)
    return counter


async def _upload_echo(address: tuple[str, int], size: int) -> _BodyCounter:
    """POST `size` bytes to /stream (echoed back, chunked) while reading the echo."""
    reader, writer = await asyncio.open_connection(*address)
    writer.write(b"POST /stream HTTP/1.1\r\nHost: shop.test\r\nContent-Length: %d\r\n\r\n" % size)
    block = b"u" * (256 * 1024)

    async def send() -> None:
        left = size
        while left > 0:
            writer.write(block[: min(left, len(block))])
            left -= len(block)
            await writer.drain()

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(send())
        reading = tasks.create_task(_read_response(reader))
    counter = reading.result()
    writer.close()
    await writer.wait_closed()
    return counter


async def _download(address: tuple[str, int], size: int, framing: str) -> _BodyCounter:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(wire.get(f"/download?bytes={size}&framing={framing}"))
    counter = await _read_response(reader)
    writer.close()
    await writer.wait_closed()
    return counter


def _memory(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return {key: int(fields[key].split()[0]) * 1024 for key in ("VmRSS", "VmHWM")}


@pytest.fixture
async def gateway_process(app_upstream: StartApp) -> AsyncIterator[tuple[int, tuple[str, int]]]:
    """The gateway in a subprocess (same event loop kind as the test) in front of an app."""
    address = await app_upstream("east")
    loop_name = "uvloop" if "uvloop" in type(asyncio.get_running_loop()).__module__ else "asyncio"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.gateway.gateway_process",
        "--upstream",
        address,
        "--loop",
        loop_name,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stdin is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    assert line.startswith(b"READY "), line
    yield process.pid, ("127.0.0.1", int(line.split()[1]))
    process.stdin.close()
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        process.kill()
        await process.wait()


async def test_100_mib_both_ways_keeps_gateway_memory_bounded(
    gateway_process: tuple[int, tuple[str, int]],
) -> None:
    pid, address = gateway_process
    warm = await _download(address, 1024, "length")  # imports, pools, first buffers
    assert warm.status == 200
    before = _memory(pid)["VmRSS"]
    upload = await _upload_echo(address, BODY_BYTES)
    download = await _download(address, BODY_BYTES, "length")
    chunked = await _download(address, BODY_BYTES, "chunked")
    peak = _memory(pid)["VmHWM"]
    assert (upload.status, upload.received) == (200, BODY_BYTES)
    assert (download.status, download.received) == (200, BODY_BYTES)
    assert (chunked.status, chunked.received) == (200, BODY_BYTES)
    assert peak - before < RSS_GROWTH_LIMIT, f"RSS grew {(peak - before) / MIB:.1f} MiB"


async def test_a_slow_client_pauses_the_upstream(
    app_upstream: StartApp, gateway: StartGateway
) -> None:
    address = await app_upstream("east")
    gw = await gateway(tables.single(address))
    reader, writer = await asyncio.open_connection(*gw.addresses[0])
    writer.write(wire.get(f"/download?bytes={64 * MIB}"))  # and do not read
    downstream = next(iter(gw.ctx.downstreams))

    def upstream_paused() -> bool:
        active = downstream._active
        return active is not None and active.up is not None and active.up.read_paused

    await eventually(upstream_paused)
    buffered = downstream.transport.get_write_buffer_size()
    # What was in flight when the pause came: the high-water mark plus about one read.
    assert buffered < gw.settings.write_high_bytes + 512 * 1024
    counter = await _read_response(reader)  # now read it all: reading resumes
    writer.close()
    await writer.wait_closed()
    assert counter.received == 64 * MIB


async def test_a_slow_upstream_pauses_the_client(gateway: StartGateway) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(never_read, "127.0.1.1", 0)
    port = server.sockets[0].getsockname()[1]
    gw = await gateway(tables.single(f"127.0.1.1:{port}"))
    _reader, writer = await asyncio.open_connection(*gw.addresses[0])
    writer.write(b"POST /up HTTP/1.1\r\nHost: shop.test\r\nContent-Length: %d\r\n\r\n" % (64 * MIB))
    block = b"p" * (256 * 1024)
    downstream = next(iter(gw.ctx.downstreams))

    async def push() -> None:
        while True:
            writer.write(block)
            await writer.drain()

    async with asyncio.TaskGroup() as tasks:
        pushing = tasks.create_task(push())
        # Paused with the upstream connected: the client may also pause briefly while the
        # upstream connection is still being opened, which is not the state under test.
        await eventually(
            lambda: (
                bool(downstream._paused)
                and downstream._active is not None
                and downstream._active.up is not None
            )
        )
        pushing.cancel()
    active = downstream._active
    assert active is not None
    assert active.up is not None
    assert active.up.transport.get_write_buffer_size() < gw.settings.write_high_bytes + 512 * 1024
    writer.close()
    for upstream_writer in accepted:
        upstream_writer.close()
    server.close()
    await server.wait_closed()
