"""Policy sources. For now: read policy files and directories (blocking file-system reads only).

Parsing is `policies.loading`'s job; this module only finds and decodes files. Display names are
the paths as given (joined with the names found under a directory), so messages point where the
operator looked.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from policies.errors import PolicyError
from policies.model import Origin, Problem, Severity

POLICY_SUFFIXES = (".yaml", ".yml")


def read_policy_files(paths: Sequence[str | os.PathLike[str]]) -> list[tuple[str, str]]:
    """(display name, text) of every policy file under `paths`, in the order the paths are given.

    Within a directory, its files come first (by name), then its subdirectories' (by name), the
    order of `os.walk`; load order matters for ties (duplicates, hostname ownership), so every
    reader of a directory should list it the same way.

    Raises PolicyError listing every path that could not be read (after trying all of them).
    """
    files, problems = collect_policy_files(paths)
    errors = tuple(p for p in problems if p.severity is Severity.ERROR)
    if errors:
        raise PolicyError(errors)
    return files


def collect_policy_files(
    paths: Sequence[str | os.PathLike[str]],
) -> tuple[list[tuple[str, str]], tuple[Problem, ...]]:
    """Like `read_policy_files`, but unreadable paths become problems instead of an exception.

    A file named explicitly is read whatever its suffix; under a directory only *.yaml and *.yml
    files are read, recursively, skipping names that start with "." (editor and VCS litter). A
    directory without policy files is a warning.
    """
    files: list[tuple[str, str]] = []
    problems: list[Problem] = []
    for path in paths:
        name = os.fspath(path)
        if os.path.isdir(name):
            found = _policy_files_under(name)
            if not found:
                problems.append(_problem(name, "no *.yaml or *.yml files here", Severity.WARNING))
            for file in found:
                _read(file, files, problems)
        else:
            _read(name, files, problems)
    return files, tuple(problems)


def _policy_files_under(directory: str) -> list[str]:
    found: list[str] = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(
            os.path.join(root, name)
            for name in sorted(names)
            if not name.startswith(".") and name.endswith(POLICY_SUFFIXES)
        )
    return found


def _read(name: str, files: list[tuple[str, str]], problems: list[Problem]) -> None:
    try:
        with open(name, encoding="utf-8-sig") as stream:
            files.append((name, stream.read()))
    except UnicodeDecodeError as exc:
        problems.append(
            _problem(name, f"cannot read: not UTF-8 text ({exc.reason} at byte {exc.start})")
        )
    except OSError as exc:
        problems.append(_problem(name, f"cannot read: {exc.strerror or exc}"))


def _problem(name: str, message: str, severity: Severity = Severity.ERROR) -> Problem:
    return Problem(Origin(name, 0, 0), "", message, severity)
