"""The policy directory source: polls a directory for changes and delivers whole policy sets.

File-system I/O (stat, read) in worker threads; parsing is `policies.loading`'s.

* **Watching** compares a fingerprint of the directory (path, size, mtime, ctime and inode of
  every policy file) every `poll_interval_s`: inotify is not in the standard library, and a
  1 s poll is invisible next to a human edit. A change is loaded once the fingerprint has stayed
  the same for `debounce_s`, so an editor's save-as-three-writes or a `git checkout` of many
  files becomes one load.
* **Which files**: exactly those `controller.sources` reads (`*.yaml` and `*.yml` anywhere under
  the directory, names starting with a dot skipped), so `fleetgate validate DIR` and the running
  gateway always judge the same documents. Skipping dot names also skips the `..data`
  directories of a Kubernetes ConfigMap volume, while the visible symlinks into them are
  followed (stat follows links), so a ConfigMap update shows up as a change of the linked files.
* **Reload on demand**: `request_reload()` (SIGHUP) loads at once, without waiting for a poll.
* **A bad edit changes nothing served**: when the load has any error, the whole edit is rejected,
  even though `policies.loading` could load the other documents: dropping the broken document
  would drop its routes, and a bad policy must never reduce what is served (DESIGN.md §7). Every
  problem is logged with `file:line:col`, counted, and kept in `status` until a later load
  succeeds; the last good `PolicySet` stays with the consumer. A successful load that differs
  from the last good one is handed to `deliver(policies, refused)` (for example
  `Reconciler.update_policies`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from controller import sources
from policies import loading
from policies.model import PolicySet, Problem, Severity
from policies.validation import Refused

log = logging.getLogger(__name__)

Fingerprint = tuple[tuple[str, int, int, int, int], ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Loaded:
    """One read of the directory: the policies (None when rejected) and every problem."""

    policies: PolicySet | None
    refused: Refused
    problems: tuple[Problem, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class FileSourceSettings:
    """Policy directory watching (controller process settings)."""

    directory: Path  # the policy directory, read recursively (or a single policy file)
    poll_interval_s: float = 1.0  # how often the directory fingerprint is compared
    debounce_s: float = 0.5  # a change must stay unchanged this long before it is loaded


@dataclasses.dataclass(frozen=True, slots=True)
class FileSourceStatus:
    """What `/status`, `fleetgate status` and the metrics show about the policy directory."""

    directory: str
    ok: bool  # the most recent load was accepted (False before the first load too)
    files: int  # policy files read by the most recent load
    loads: int  # loads attempted (start-up, watch, SIGHUP)
    accepted: int  # ... that were valid
    rejected: int  # ... that had errors; the last good policy set stayed
    delivered: int  # accepted loads whose policy set differed from the previous one
    problems: tuple[Problem, ...]  # of the most recent load: its errors, or warnings if accepted
    loaded_at: float | None  # wall-clock time of the most recent load


class FileSource:
    """Owns the watch loop over one policy directory. Run it with `run()` until cancelled."""

    def __init__(
        self, settings: FileSourceSettings, deliver: Callable[[PolicySet, Refused], object]
    ) -> None:
        self.settings = settings
        self._deliver = deliver
        self._reload = asyncio.Event()
        self._lock = asyncio.Lock()
        self._fingerprint: Fingerprint | None = None  # of the most recent load
        self._last_good: PolicySet | None = None
        self._ok = False
        self._files = 0
        self._loads = self._accepted = self._rejected = self._delivered = 0
        self._problems: tuple[Problem, ...] = ()
        self._loaded_at: float | None = None

    @property
    def policies(self) -> PolicySet | None:
        """The last good policy set (None until a load succeeds)."""
        return self._last_good

    @property
    def status(self) -> FileSourceStatus:
        return FileSourceStatus(
            directory=str(self.settings.directory),
            ok=self._ok,
            files=self._files,
            loads=self._loads,
            accepted=self._accepted,
            rejected=self._rejected,
            delivered=self._delivered,
            problems=self._problems,
            loaded_at=self._loaded_at,
        )

    def request_reload(self) -> None:
        """Load again as soon as possible, changed or not. Safe to call from a signal handler
        installed with `loop.add_signal_handler` (it runs on the loop)."""
        self._reload.set()

    async def run(self) -> None:
        """Load now (unless `load` already ran), then watch until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._watch(), name="filesource.watch")

    async def _watch(self) -> None:
        if self._loads == 0:
            await self.load()
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # arrives as the event fires (python/cpython#86296), and the task never stops.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.poll_interval_s):
                    await self._reload.wait()
            if self._reload.is_set():
                self._reload.clear()
                await self.load()
                continue
            seen = await asyncio.to_thread(self.fingerprint)
            if seen == self._fingerprint:
                continue
            # Debounce: load only once the directory looks the same twice, debounce_s apart.
            while True:
                await asyncio.sleep(self.settings.debounce_s)
                again = await asyncio.to_thread(self.fingerprint)
                if again == seen:
                    break
                seen = again
            await self.load()

    async def load(self) -> FileSourceStatus:
        """Read and parse the directory now; deliver the policy set if valid and changed."""
        async with self._lock:
            fingerprint, files, loaded = await asyncio.to_thread(self._read_and_parse)
            self._fingerprint = fingerprint
            self._loads += 1
            self._files = files
            self._loaded_at = time.time()
            policies, problems = loaded.policies, loaded.problems
            self._problems = problems
            if policies is None:
                self._ok = False
                self._rejected += 1
                errors = [p for p in problems if p.severity is Severity.ERROR]
                log.error(
                    "policy change rejected, the last good policies stay: directory=%s errors=%d",
                    self.settings.directory,
                    len(errors),
                )
                for problem in problems:
                    log.error("policy problem: %s", problem)
                return self.status
            for problem in problems:
                log.warning("policy problem: %s", problem)
            self._ok = True
            self._accepted += 1
            if policies != self._last_good:
                self._last_good = policies
                self._delivered += 1
                log.info(
                    "policies loaded: directory=%s files=%d routes=%d clusters=%d",
                    self.settings.directory,
                    files,
                    len(policies.routes),
                    len(policies.clusters),
                )
                self._deliver(policies, loaded.refused)
            return self.status

    def fingerprint(self) -> Fingerprint:
        """Identity of every policy file's current content, as cheaply as stat can tell."""
        entries = []
        for path in self.policy_files():
            try:
                st = os.stat(path)
            except OSError:  # removed between listing and stat: the next poll sees it gone
                continue
            entries.append((path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
        return tuple(entries)

    def policy_files(self) -> list[str]:
        """The files `controller.sources` reads for this path, listed the way it lists them."""
        directory = os.fspath(self.settings.directory)
        if not os.path.isdir(directory):
            return [directory]  # a single policy file (or nothing there yet)
        found: list[str] = []
        for root, dirs, names in os.walk(directory):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found.extend(
                os.path.join(root, name)
                for name in sorted(names)
                if not name.startswith(".") and name.endswith(sources.POLICY_SUFFIXES)
            )
        return found

    def _read_and_parse(self) -> tuple[Fingerprint, int, Loaded]:
        """Worker thread: fingerprint first, so a write during the read triggers another load."""
        fingerprint = self.fingerprint()
        files, read_problems = sources.collect_policy_files([self.settings.directory])
        result = loading.load_documents(files)
        problems = read_problems + result.problems
        if not result.ok or any(p.severity is Severity.ERROR for p in read_problems):
            return fingerprint, len(files), Loaded(None, frozenset(), problems)
        return fingerprint, len(files), Loaded(result.policies, result.refused, problems)
