"""The state file: atomic replace, leftovers of killed writers, refusal of damaged files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from controller.statefile import FORMAT, StateFile, StateFileError

GOOD = {"releases": {"shop/web-v2": {"state": {"phase": "Paused", "canary_weight": 25}}}}


def leftovers(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


async def test_a_saved_document_loads_back_with_its_format(tmp_path: Path) -> None:
    store = StateFile(tmp_path / "deep" / "state.json")
    assert await store.load() is None
    await store.save(GOOD)
    assert await store.load() == {**GOOD, "format": FORMAT}
    assert leftovers(store.path) == []


async def test_a_save_that_fails_midway_leaves_the_good_file_and_no_temp(tmp_path: Path) -> None:
    store = StateFile(tmp_path / "state.json")
    await store.save(GOOD)
    # json.dump streams: the releases are written to the temp file before the set fails it.
    broken = {"releases": {f"shop/r{i}": {"weight": i} for i in range(2000)}, "zz": {1, 2}}
    with pytest.raises(TypeError):
        await store.save(broken)
    assert await store.load() == {**GOOD, "format": FORMAT}
    assert leftovers(store.path) == []


def test_a_temp_file_left_by_a_killed_writer_is_ignored_and_removed(tmp_path: Path) -> None:
    store = StateFile(tmp_path / "state.json")
    store.write(GOOD)
    partial = tmp_path / ".state.json.k2j3h4.tmp"
    partial.write_text('{"releases": {"shop/web-v2": {"state": {"phase": "Progr')
    assert store.read() == {**GOOD, "format": FORMAT}
    assert not partial.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param('{"releases": {', "not valid JSON", id="truncated"),
        pytest.param('["a", "list"]', "not a fleetgate state document", id="not-an-object"),
        pytest.param('{"releases": {}}', "not a fleetgate state document", id="no-format"),
        pytest.param('{"format": 99}', "newer than this fleetgate", id="from-the-future"),
    ],
)
def test_a_damaged_state_file_stops_the_controller_instead_of_starting_empty(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "state.json"
    path.write_text(text)
    with pytest.raises(StateFileError, match=message):
        StateFile(path).read()


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from controller.statefile import StateFile

    store = StateFile(Path(sys.argv[1]))
    payload = "x" * 200_000  # big enough that a kill often lands inside a write
    for n in range(1, 100_000):
        store.write({"n": n, "payload": payload})
        print(n, flush=True)
    """
)


def test_killing_a_writer_at_any_moment_leaves_a_whole_document(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    seen: list[int] = []
    for _ in range(4):
        with subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        ) as writer:
            assert writer.stdout is not None
            for _ in range(3):  # let it finish a few writes, then kill it mid-stream
                writer.stdout.readline()
            os.kill(writer.pid, signal.SIGKILL)
            writer.wait(timeout=10)
        document = StateFile(path).read()
        assert document is not None
        assert document["payload"] == "x" * 200_000
        assert isinstance(document["n"], int)
        seen.append(document["n"])
        assert leftovers(path) == []
    assert all(n >= 3 for n in seen)
    assert json.loads(path.read_text())["format"] == FORMAT
