"""Where the release runner keeps its state between runs: a JSON state file (file-system I/O).

The state is what must survive a controller restart without changing any weight: every started
release's `ReleaseState`, the analysis window being measured (with its counter baseline), the
revision histories, and the policies an operator rolled back. `controller.releases` builds the
document; this module only stores it.

**Atomic replace.** `save` writes a temporary file next to the state file, flushes and fsyncs it,
renames it over the state file (`os.replace`, atomic on POSIX) and fsyncs the directory so the
rename itself is durable. A controller killed at any point leaves either the old state or the new
one, never a mix; a temporary file it left behind is ignored and removed by the next `load`.

**A damaged state file stops the controller** (`StateFileError`) instead of being treated as
empty: starting from nothing would drop every live overlay and move all traffic back to the
operator's files, which is exactly the weight change a restart must not cause. Move the file away
to start from scratch on purpose.

**Kubernetes mode** keeps the same data in the objects instead (`controller.kubestate`): each
release's record (the `releases.<namespace/name>` entry of the document) goes into its Release's
`status.release`, written with a merge patch, and the policy histories into the ConfigMap
`fleetgate-policy-history`. `KubeStateStore` implements the `StateStore` protocol below and is
passed to the leader's runner in place of a `StateFile`; nothing else changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from controller.errors import ControllerError

log = logging.getLogger(__name__)

FORMAT = 1  # bump when a change is not readable by the previous release of fleetgate


class StateFileError(ControllerError):
    """The state file exists but cannot be read as a fleetgate state document."""


class StateStore(Protocol):
    """Loads and saves the runner's whole state document (a JSON-able mapping)."""

    async def load(self) -> Mapping[str, Any] | None:
        """The last saved document, or None when nothing was ever saved."""
        ...

    async def save(self, document: Mapping[str, Any]) -> None:
        """Replace the saved document; when this returns, a crash no longer loses it."""
        ...


class StateFile:
    """A `StateStore` in one JSON file, replaced atomically on every save."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def load(self) -> Mapping[str, Any] | None:
        return await asyncio.to_thread(self.read)

    async def save(self, document: Mapping[str, Any]) -> None:
        await asyncio.to_thread(self.write, document)

    def read(self) -> Mapping[str, Any] | None:
        """Blocking `load`: also removes temporary files a killed writer left behind."""
        self._remove_leftovers()
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateFileError(f"cannot read state file {self.path}: {exc}") from exc
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise StateFileError(f"state file {self.path} is not valid JSON: {exc}") from exc
        if not isinstance(document, dict) or not isinstance(document.get("format"), int):
            raise StateFileError(f"state file {self.path} is not a fleetgate state document")
        if document["format"] > FORMAT:
            raise StateFileError(
                f"state file {self.path} has format {document['format']}, newer than this "
                f"fleetgate understands ({FORMAT})"
            )
        return document

    def write(self, document: Mapping[str, Any]) -> None:
        """Blocking `save`: temp file, fsync, rename, fsync of the directory."""
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                json.dump({**document, "format": FORMAT}, stream, separators=(",", ":"))
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        _fsync_directory(directory)

    def _remove_leftovers(self) -> None:
        for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            log.warning("removing a partial state file left by an earlier run: %s", leftover)
            with contextlib.suppress(OSError):
                leftover.unlink()


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable; some file systems cannot open a directory, which is harmless."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
