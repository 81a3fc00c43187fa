"""The policy directory source on a real temporary directory: edits, broken edits, recovery."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from controller.filesource import FileSource, FileSourceSettings
from policies.model import PolicySet
from policies.validation import Refused
from tests.conftest import eventually

CLUSTERS = """\
apiVersion: fleetgate.io/v1alpha1
kind: MemberCluster
metadata:
  name: east
spec:
  services:
    - namespace: shop
      name: web
      ports:
        - port: 80
          endpoints: ["127.0.1.1:8080"]
"""


def route(host: str, weight: int | str = 1) -> str:
    return f"""\
apiVersion: fleetgate.io/v1alpha1
kind: TrafficPolicy
metadata:
  name: storefront
  namespace: shop
spec:
  hostnames: [{host}]
  rules:
    - backendRefs:
        - name: web
          port: 80
          weight: {weight}
"""


class Received:
    """The consumer side: what a reconciler would be handed."""

    def __init__(self) -> None:
        self.sets: list[PolicySet] = []

    def __call__(self, policies: PolicySet, refused: Refused) -> None:
        self.sets.append(policies)

    @property
    def hosts(self) -> list[tuple[str, ...]]:
        return [tuple(h for r in s.routes for h in r.hostnames) for s in self.sets]


def write(path: Path, text: str) -> None:
    """Write and move the mtime on, so a same-size rewrite within one clock tick still shows."""
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


@contextlib.asynccontextmanager
async def watching(directory: Path, received: Received) -> AsyncIterator[FileSource]:
    settings = FileSourceSettings(directory, poll_interval_s=0.02, debounce_s=0.05)
    source = FileSource(settings, received)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(source.run(), name="filesource")
        try:
            yield source
        finally:
            task.cancel()


async def test_an_edit_is_delivered_after_the_debounce(tmp_path: Path) -> None:
    write(tmp_path / "clusters.yaml", CLUSTERS)
    write(tmp_path / "shop.yaml", route("shop.example"))
    received = Received()
    async with watching(tmp_path, received) as source:
        await eventually(lambda: received.hosts == [("shop.example",)])
        write(tmp_path / "shop.yaml", route("store.example"))
        await eventually(lambda: len(received.sets) == 2)
        status = source.status
    assert received.hosts == [("shop.example",), ("store.example",)]
    assert (status.ok, status.files, status.accepted, status.delivered) == (True, 2, 2, 2)
    assert [c.name for c in received.sets[1].clusters] == ["east"]


async def test_a_broken_edit_is_rejected_and_the_last_good_set_stays(tmp_path: Path) -> None:
    write(tmp_path / "clusters.yaml", CLUSTERS)
    write(tmp_path / "shop.yaml", route("shop.example"))
    received = Received()
    async with watching(tmp_path, received) as source:
        await eventually(lambda: len(received.sets) == 1)
        write(tmp_path / "shop.yaml", route("shop.example", weight="heavy"))
        await eventually(lambda: source.status.rejected == 1)
        broken = source.status
        assert source.policies is received.sets[0]
        write(tmp_path / "shop.yaml", route("fixed.example", weight=2))
        await eventually(lambda: len(received.sets) == 2)
        fixed = source.status
    assert not broken.ok
    assert broken.problems
    shown = str(broken.problems[0])
    assert shown.startswith(f"{tmp_path / 'shop.yaml'}:12:")  # file:line:col of the weight
    assert "weight" in shown
    assert received.hosts == [("shop.example",), ("fixed.example",)]
    assert (fixed.ok, fixed.problems, fixed.rejected, fixed.accepted) == (True, (), 1, 2)


async def test_a_bad_document_rejects_the_whole_edit(tmp_path: Path) -> None:
    """The loader could keep the other documents; the source refuses the edit instead, so a bad
    policy never removes the routes that the good ones still describe."""
    write(tmp_path / "clusters.yaml", CLUSTERS)
    write(tmp_path / "shop.yaml", route("shop.example"))
    received = Received()
    async with watching(tmp_path, received) as source:
        await eventually(lambda: len(received.sets) == 1)
        write(tmp_path / "clusters.yaml", CLUSTERS.replace("kind: MemberCluster", "kind: Nope"))
        await eventually(lambda: source.status.rejected == 1)
        status = source.status
    assert len(received.sets) == 1
    assert [c.name for c in received.sets[0].clusters] == ["east"]
    assert any("clusters.yaml" in str(p) for p in status.problems)


async def test_unchanged_content_is_not_delivered_again(tmp_path: Path) -> None:
    write(tmp_path / "shop.yaml", route("shop.example"))
    received = Received()
    async with watching(tmp_path, received) as source:
        await eventually(lambda: len(received.sets) == 1)
        write(tmp_path / "shop.yaml", route("shop.example") + "# a comment\n")
        await eventually(lambda: source.status.loads == 2)
        source.request_reload()  # SIGHUP
        await eventually(lambda: source.status.loads == 3)
        status = source.status
    assert len(received.sets) == 1
    assert (status.accepted, status.delivered) == (3, 1)


async def test_reload_on_request_and_new_and_removed_files(tmp_path: Path) -> None:
    received = Received()
    async with watching(tmp_path, received) as source:
        await eventually(lambda: len(received.sets) == 1)
        write(tmp_path / "a.yaml", route("a.example"))
        await eventually(lambda: received.hosts[-1] == ("a.example",))
        (tmp_path / "a.yaml").unlink()
        await eventually(lambda: received.hosts[-1] == ())
        (tmp_path / ".a.yaml.swp").write_text("editor litter, not a policy: {")
        source.request_reload()
        await eventually(lambda: source.status.loads == 4)
        status = source.status
    assert received.hosts == [(), ("a.example",), ()]
    assert status.ok


async def test_a_missing_directory_is_a_problem_until_it_appears(tmp_path: Path) -> None:
    directory = tmp_path / "policies"
    received = Received()
    async with watching(directory, received) as source:
        await eventually(lambda: source.status.rejected == 1)
        missing = source.status
        directory.mkdir()
        write(directory / "shop.yaml", route("shop.example"))
        await eventually(lambda: len(received.sets) == 1)
    assert missing.problems
    assert str(directory) in str(missing.problems[0])
    assert received.hosts == [("shop.example",)]


async def test_a_burst_of_writes_is_one_load(tmp_path: Path) -> None:
    write(tmp_path / "shop.yaml", route("v0.example"))
    received = Received()
    settings = FileSourceSettings(tmp_path, poll_interval_s=0.02, debounce_s=0.3)
    source = FileSource(settings, received)
    await source.load()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(source.run(), name="filesource")
        for i in range(1, 6):  # all within one debounce window of each other
            write(tmp_path / "shop.yaml", route(f"v{i}.example"))
        await eventually(lambda: source.status.loads == 2)
        task.cancel()
    assert received.hosts == [("v0.example",), ("v5.example",)]
