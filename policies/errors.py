"""The policy package's one error type. Pure."""

from __future__ import annotations

from policies.model import Problem, Severity


class PolicyError(Exception):
    """Documents that cannot be used: carries every problem found, not just the first."""

    def __init__(self, problems: tuple[Problem, ...]) -> None:
        self.problems = problems
        errors = [p for p in problems if p.severity is Severity.ERROR]
        first = str(errors[0]) if errors else "no errors"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(first + more)


class SnapshotError(PolicyError):
    """A wire snapshot that cannot become a table: wrong schema, checksum or shape.

    Raised by `policies.snapshot.load`; the gateway keeps its last good table when it sees one.
    """
