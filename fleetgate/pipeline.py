"""The embedded controller of `fleetgate run` and `fleetgate controller -c DIR` (composition):
policy directory → release runner → reconcile → publisher, with DNS names followed on the side.

Both commands build it the same way; `run` attaches gateways to its publisher (in-process or as
workers over the snapshot API), `controller -c` serves the snapshot API to gateway processes.
It also answers the status they serve: `/status` (`status`, `dns_status`) and `/v1/status`
(`status_document`, the shape `fleetgate status` reads in both modes).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from controller import statusapi
from controller.dns import DnsEndpoints, DnsSettings
from controller.errors import ControllerError
from controller.filesource import FileSource, FileSourceSettings, FileSourceStatus
from controller.observations import Observations
from controller.publishing import Publisher, PublishSettings
from controller.reconcile import Reconciler, ReconcileSettings, merge_inventory
from controller.releases import ReleaseRunner, ReleaseSettings
from gateway import frozen_tables
from gateway.frozen_tables import FrozenTables
from gateway.metrics import ReloadStats
from gateway.replica import Feeder
from policies.model import Origin, PolicySet, Problem, Severity
from policies.table import Inventory
from policies.validation import Refused


class _Source(FileSource):
    """The file source, remembering the most recent rejected load for `/status`."""

    last_rejected: FileSourceStatus | None = None

    async def load(self) -> FileSourceStatus:
        status = await super().load()
        if not status.ok:
            self.last_rejected = status
        return status


class PolicyPipeline:
    """The embedded controller: policy directory → release runner → reconcile → publisher.

    The runner hands reconcile the files with every release's overlay applied and rebuilds at
    once. DNS answers arrive on their own, so reconcile's loop runs too and rebuilds (debounced)
    when they change; it does not build again what the runner's rebuild compiled, so each load
    is one compile and a failure is counted once in `compile_failures` (the runner handing the
    same failing policies over on later ticks compiles nothing: reconcile keeps the last error).
    """

    def __init__(
        self,
        directory: Path,
        *,
        poll_interval_s: float,
        debounce_s: float,
        publish: PublishSettings | None = None,
        releases: ReleaseSettings | None = None,
        dns: DnsSettings | None = None,
        freeze_tables: bool = False,
    ) -> None:
        releases = releases or ReleaseSettings()
        self.publisher = Publisher(publish)
        # `fleetgate run` and `demo` serve the tables they compile: each is frozen as it is built
        # (gateway.frozen_tables), as a gateway freezes the tables it decodes.
        frozen = FrozenTables() if freeze_tables else None
        self.reconciler = Reconciler(
            self.publisher,
            ReconcileSettings(debounce_s=debounce_s, max_delay_s=max(2.0, 4 * debounce_s)),
            build_with=None if frozen is None else functools.partial(frozen_tables.build, frozen),
        )
        # Built-in analysis scrapes these; `fleetgate run` points it at its own admin port.
        # Without a static list: what the live gateways report when they poll.
        self.metrics_targets: Callable[[], Sequence[str]] = lambda: (
            releases.observations.metrics_urls or self.publisher.metrics_urls()
        )
        self._refused: Refused = frozenset()  # the source's refused references, passed on
        self._policies: PolicySet | None = None  # the last accepted load, for `/v1/status`
        # Names in the files are followed from the first load on; answers replace the port's
        # static entry in reconcile's inventory (docs/controller.md, "DNS endpoints").
        self.names = DnsEndpoints(dns or DnsSettings(), on_change=self.reconciler.update_inventory)
        self.runner = ReleaseRunner(
            releases,
            self.publisher,
            self._hand_over,
            observations=Observations(
                releases.observations, targets=lambda: self.metrics_targets()
            ),
        )
        self.source = _Source(
            FileSourceSettings(directory, poll_interval_s=poll_interval_s, debounce_s=debounce_s),
            self._deliver,
        )

    def _deliver(self, policies: PolicySet, refused: Refused) -> None:
        self._refused, self._policies = refused, policies
        self.names.update_policies(policies)  # first: a name that left takes its entries along
        self.runner.update_policies(policies)

    async def _hand_over(self, policies: PolicySet) -> int | None:
        """The runner's reconcile hook: compile the effective policies now; the version that
        serves them, or None when they did not compile (the last good table stays)."""
        self.reconciler.update_policies(policies, self._refused)
        await self.reconciler.rebuild()
        status = self.reconciler.status
        return status.version if status.last_error is None else None

    async def load_first(self) -> tuple[Problem, ...]:
        """Load and publish the first table (with the saved release overlays); returns the
        errors when there is none to serve. Raises `ControllerError` on a damaged release
        state file (starting without it would move every live weight back to stable)."""
        status = await self.source.load()
        if not status.ok:
            return tuple(p for p in status.problems if p.severity is Severity.ERROR)
        await self.names.prime()  # the first table carries the DNS answers (bounded by a timeout)
        await self.runner.prime()
        if self.publisher.latest is None:
            error = self.reconciler.status.last_error or "the policies did not compile"
            return (Problem(_where(self.source), "", error),)
        return ()

    async def start(self, program: str) -> bool:
        """`load_first` for a command: False, with the reasons on stderr, when there is nothing
        to serve (invalid policies, or a damaged release state file)."""
        try:
            problems = await self.load_first()
        except ControllerError as exc:
            print(f"{program}: {exc}", file=sys.stderr)
            return False
        if problems:
            where = self.source.settings.directory
            print(f"{program}: no valid policies in {where}:", file=sys.stderr)
            for problem in problems:
                print(problem, file=sys.stderr)
            return False
        return True

    def feeders(self) -> list[Feeder]:
        return [self.source.run, self.runner.run, self.names.run, self.reconciler.run]

    def reload_stats(self) -> ReloadStats:
        source, built = self.source.status, self.reconciler.status
        return ReloadStats(
            loads=source.loads, rejected=source.rejected, failures=built.failures, valid=source.ok
        )

    def dns_status(self) -> dict[str, Any]:
        """The `dns` section of `/status`: one entry per followed name."""
        return {"names": statusapi.dns_section(self.names.status())}

    def status_document(self) -> dict[str, Any]:
        """`GET /v1/status` (what `fleetgate status` reads), as in Kubernetes mode."""
        policies = self._policies
        found = merge_inventory(policies, self.names.inventory) if policies else Inventory({})
        return statusapi.file_document(
            policies,
            self.source.status,
            self.publisher,
            found,
            self.names.status(),
            self.reconciler.status,
        )

    def status(self) -> dict[str, Any]:
        """The `policy` section of `/status`."""
        source, built = self.source.status, self.reconciler.status
        rejected = self.source.last_rejected
        latest = self.publisher.latest
        return {
            "directory": source.directory,
            "ok": source.ok,
            "files": source.files,
            "loads": source.loads,
            "accepted": source.accepted,
            "rejected": source.rejected,
            "loaded_at": source.loaded_at,
            "problems": [str(p) for p in source.problems],
            "last_error": None
            if rejected is None
            else {
                "at": rejected.loaded_at,
                "current": not source.ok,  # False once a later load was accepted
                "problems": [str(p) for p in rejected.problems],
            },
            "published_version": built.version,
            "compile_failures": built.failures,
            "last_compile_error": built.last_error,
            "rollout": str(self.publisher.rollout(latest.version)) if latest else None,
        }


def _where(source: FileSource) -> Origin:
    return Origin(str(source.settings.directory), 0, 0)
