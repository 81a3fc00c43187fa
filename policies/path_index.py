"""Which rules of an index entry can match a request path, found without scanning them all. Pure.

An index entry (`policies.table.HostRoutes`) holds every rule serving a host, in precedence order;
with 10,000 routes over 1,000 hostnames that is about 50 rules a host. A linear scan tests each
rule's path in turn, so the decision would slow down as routes are added to a host. This index
cuts the candidates to the rules whose path test can hold, *keeping their precedence order*, so
the first candidate whose full match holds is the one a linear scan would pick:

* Exact: a dict from each Exact value to every rule whose path test holds for that very path
  (the Exact rules with that value and the PathPrefix and RegularExpression rules that hold for
  it, evaluated when the index is built), so such a request tests no path at all;
* PathPrefix: keyed by the value's first segment. PathPrefix compares whole segments, so a
  prefix "/a" (or "/a/", "/a/b") can only hold for paths whose first segment is "a": "/a",
  "/a/", "/a/b", never "/ab". A path not found among the Exact values can match no Exact rule,
  so the bucket holds the PathPrefix rules of its segment and the rules that can match any path;
* always tested (`other`, merged into every bucket in precedence order): RegularExpression
  rules, PathPrefix "/" (a match without a path is one) and a value that does not start with "/".

Paths are compared as sent (case-sensitive, not percent-decoded), as in `policies.matching`, so
"/A" and "/%61" are other segments than "/a". A rule with several matches is several candidates
(one `CompiledRule` per match), each indexed by its own path. Entries with fewer than
`MIN_INDEXED_RULES` rules are scanned whole: probing the index would cost more than it saves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from policies.table import CompiledRule  # the table imports this module to build entries

# Also the path ranks of the precedence order (`policies.precedence.Key.path_rank`, smaller wins).
PATH_EXACT, PATH_PREFIX, PATH_REGEX = 0, 1, 2
PATH_HOLDS = 3  # the code of an item known to hold for the path it was found under
MIN_INDEXED_RULES = 8  # below this a scan of the whole entry is as quick as the index probe

# `(path code, path value, its length, path only?, rule)`: the path test needs nothing else, so a
# rule that fails it costs one tuple, not a rule and its match. A PathPrefix value has no
# trailing "/" ("/" itself is "").
ScanItem = tuple[int, str, int, bool, "CompiledRule"]


@dataclasses.dataclass(frozen=True, slots=True)
class PathIndex:
    """The candidates of one index entry by request path (see the module docstring).

    `by_key` holds both kinds of keys in one dict, so a request probes one dict: an Exact value
    (which starts with "/") maps to the rules that hold for that path, all coded `PATH_HOLDS`;
    a first segment (which has no "/") to the items to path-test. Paths whose segment no key
    names get `other`, which is the whole entry when it is too small to index. A path without a
    leading "/" ("*") may equal a segment key: those items are path-tested, so none holds but
    the ones of `other` that would hold anyway.
    """

    by_key: Mapping[str, tuple[ScanItem, ...]]
    other: tuple[ScanItem, ...]

    def items(self, path: str) -> tuple[ScanItem, ...]:
        """The candidates for `path`, in precedence order (`policies.matching` inlines this)."""
        by_key = self.by_key
        if not by_key:
            return self.other
        found = by_key.get(path)
        if found is not None:
            return found
        segment = _segment_of(path)
        return self.other if segment is None else by_key.get(segment, self.other)

    def matching(self, path: str) -> list[CompiledRule]:
        """Every rule whose path test holds for `path`, in precedence order."""
        return [item[4] for item in self.items(path) if item_holds(item, path)]


def build(rules: Sequence[CompiledRule]) -> PathIndex:
    """The index of `rules` (precedence order)."""
    scan = tuple(
        (m.path_code, m.path_value, len(m.path_value), m.path_only, rule)
        for rule in rules
        for m in (rule.match,)
    )
    if len(scan) < MIN_INDEXED_RULES:
        return PathIndex({}, scan)
    exact: dict[tuple[str, str], list[int]] = {}  # (value, its first segment) -> positions
    segments: dict[str, list[int]] = {}
    other: list[int] = []
    for position, (code, value, _, _, _) in enumerate(scan):
        segment = None if code == PATH_REGEX else _segment_of(value)
        if segment is None:  # RegularExpression, PathPrefix "/" (stored as ""), no leading "/"
            other.append(position)
        elif code == PATH_EXACT:
            exact.setdefault((value, segment), []).append(position)
        else:
            segments.setdefault(segment, []).append(position)

    def items(positions: list[int]) -> tuple[ScanItem, ...]:
        return tuple(scan[p] for p in sorted(positions))

    by_key = {s: items(positions + other) for s, positions in segments.items()}
    for (value, segment), positions in exact.items():
        nearby = segments.get(segment, []) + other
        holding = positions + [p for p in nearby if item_holds(scan[p], value)]
        by_key[value] = tuple((PATH_HOLDS, *scan[p][1:]) for p in sorted(holding))
    return PathIndex(by_key, items(other))


def item_holds(item: ScanItem, path: str) -> bool:
    """The path test of Gateway API HTTPPathMatch, on a scan item."""
    code, value, n, _, rule = item
    if code == PATH_PREFIX:
        return path.startswith(value) and (len(path) == n or path[n] == "/")
    if code == PATH_EXACT:
        return path == value
    if code == PATH_HOLDS:
        return True
    regex = rule.match.path_regex
    return regex is not None and regex.fullmatch(path) is not None


def _segment_of(path: str) -> str | None:
    """The first segment of `path` ("a" for "/a", "/a/" and "/a/b"; "" for "/" and "//x");
    None when it does not start with "/"."""
    if not path.startswith("/"):
        return None
    end = path.find("/", 1)
    return path[1:end] if end > 0 else path[1:]
