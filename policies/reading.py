"""Check a composed YAML node tree against a shape and convert it to checked values. Pure.

Every problem names the field path and the node's position. A field that is wrong is left out of
the result (as if absent) so that the builder sees defaults instead of garbage; list items that
should be mappings are kept (as empty `Fields`) so that indices in paths stay those of the file.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import json
import math
import re
from collections.abc import Mapping

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

from policies.model import Origin, Problem
from policies.shapes import (
    Anything,
    Bool,
    Duration,
    Int,
    ListOf,
    MapOf,
    Num,
    Obj,
    Shape,
    Str,
    Timestamp,
    describe,
    parse_duration,
)

# Aliases let a small file describe a huge tree ("billion laughs"). A node is read once per path
# that reaches it, so reading stops when aliased nodes have been read again this many times in one
# document: far beyond sharing a few backendRefs, far below an exponential blow-up.
MAX_REPEATS = 10_000

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {f"{_TAG}{t}" for t in ("str", "int", "float", "bool", "null", "timestamp")}


class TooLarge(Exception):
    """A document repeats aliased nodes more than MAX_REPEATS times."""


@dataclasses.dataclass(frozen=True, slots=True)
class Fields:
    """A checked mapping: values converted by shape; invalid and absent fields are missing.

    The typed getters trust the reader (a value present has the type its shape promises) and exist
    so that builders read as plainly as the YAML.
    """

    path: str
    origin: Origin
    values: Mapping[str, object]

    def has(self, key: str) -> bool:
        return key in self.values

    def text(self, key: str, default: str = "") -> str:
        value = self.values.get(key, default)
        return value if isinstance(value, str) else default

    def opt_text(self, key: str) -> str | None:
        value = self.values.get(key)
        return value if isinstance(value, str) else None

    def integer(self, key: str, default: int = 0) -> int:
        value = self.values.get(key, default)
        return value if isinstance(value, int) else default

    def opt_integer(self, key: str) -> int | None:
        value = self.values.get(key)
        return value if isinstance(value, int) else None

    def number(self, key: str, default: float = 0.0) -> float:
        value = self.values.get(key, default)
        return float(value) if isinstance(value, int | float) else default

    def opt_number(self, key: str) -> float | None:
        value = self.values.get(key)
        return float(value) if isinstance(value, int | float) else None

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.values.get(key, default)
        return value if isinstance(value, bool) else default

    def obj(self, key: str) -> Fields | None:
        value = self.values.get(key)
        return value if isinstance(value, Fields) else None

    def objs(self, key: str) -> list[Fields]:
        value = self.values.get(key, [])
        return [v for v in value if isinstance(v, Fields)] if isinstance(value, list) else []

    def texts(self, key: str) -> list[str]:
        value = self.values.get(key, [])
        return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []

    def integers(self, key: str) -> list[int]:
        value = self.values.get(key, [])
        return [v for v in value if isinstance(v, int)] if isinstance(value, list) else []

    def mapping(self, key: str) -> dict[str, str]:
        value = self.values.get(key)
        return dict(value) if isinstance(value, dict) else {}

    def at(self, key: str) -> str:
        """The path of a field of this mapping."""
        return f"{self.path}.{key}" if self.path else key


def origin_of(file: str, node: yaml.Node) -> Origin:
    return Origin(file, node.start_mark.line + 1, node.start_mark.column + 1)


def parent_path(path: str) -> str:
    """`a.b[1].c` → `a.b[1]` → `a.b` → `a` → ``."""
    cut = max(path.rfind("."), path.rfind("["))
    return path[: max(cut, 0)]


def locate(positions: Mapping[str, Origin], path: str, default: Origin) -> Origin:
    """The position of `path`, or of its nearest ancestor that has one (a defaulted field)."""
    while True:
        if path in positions:
            return positions[path]
        if not path:
            return default
        path = parent_path(path)


class Reader:
    """Reads one document; collects problems and the position of every field it visits."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self.positions: dict[str, Origin] = {}
        self._seen: set[int] = set()  # id() of nodes read; the composed tree keeps them alive
        self._repeats = 0
        self._constructor = SafeConstructor()

    def error(self, node: yaml.Node | Origin, path: str, message: str) -> None:
        where = node if isinstance(node, Origin) else origin_of(self.file, node)
        self.problems.append(Problem(where, path, message))

    def report(self, path: str, message: str) -> None:
        """An error found while building the model, placed at the field it names."""
        self.problems.append(Problem(locate(self.positions, path, self.start), path, message))

    @property
    def start(self) -> Origin:
        return self.positions.get("", Origin(self.file, 1, 1))

    def read(self, node: yaml.Node, shape: Shape, path: str) -> object:
        """The converted value, or INVALID after reporting why."""
        if id(node) in self._seen:
            self._repeats += 1
            if self._repeats > MAX_REPEATS:
                raise TooLarge
        self._seen.add(id(node))
        self.positions.setdefault(path, origin_of(self.file, node))
        if isinstance(shape, Anything):
            return None
        if isinstance(shape, Obj):
            return self._read_obj(node, shape, path)
        if isinstance(shape, ListOf):
            return self._read_list(node, shape, path)
        if isinstance(shape, MapOf):
            return self._read_map(node, shape, path)
        value = self.scalar(node, path)
        if value is INVALID:
            return INVALID
        return self._convert(node, value, shape, path)

    def scalar(self, node: yaml.Node, path: str) -> object:
        """A scalar node's Python value; INVALID (reported) for unsupported tags."""
        if not isinstance(node, yaml.ScalarNode):
            return _Collection(node)
        if node.tag not in _SCALAR_TAGS:
            self.error(node, path, f"the YAML tag {node.tag} is not supported here")
            return INVALID
        try:
            return self._constructor.construct_object(node, deep=True)
        except (ConstructorError, ValueError) as exc:  # e.g. an impossible date like 2024-02-31
            self.error(node, path, f"cannot read {node.value!r}: {' '.join(str(exc).split())}")
            return INVALID

    def _convert(self, node: yaml.Node, value: object, shape: Shape, path: str) -> object:
        if isinstance(shape, Str):
            if not isinstance(value, str):
                return self._wrong(node, value, shape, path)
            return self._check_str(node, value, shape, path)
        if isinstance(shape, Bool):
            return value if isinstance(value, bool) else self._wrong(node, value, shape, path)
        if isinstance(shape, Int):
            if isinstance(value, bool) or not isinstance(value, int) or not _in_int(value, shape):
                return self._wrong(node, value, shape, path)
            return value
        if isinstance(shape, Num):
            if not _in_num(value, shape):
                return self._wrong(node, value, shape, path)
            return value
        if isinstance(shape, Duration):
            seconds = parse_duration(value) if isinstance(value, str) else None
            return self._wrong(node, value, shape, path) if seconds is None else seconds
        assert isinstance(shape, Timestamp)
        if isinstance(value, str):
            try:
                value = datetime.datetime.fromisoformat(value)
            except ValueError:
                return self._wrong(node, value, shape, path)
        if not isinstance(value, datetime.datetime) or value.tzinfo is None:
            return self._wrong(node, value, shape, path)
        return int(value.timestamp())

    def _check_str(self, node: yaml.Node, value: str, shape: Str, path: str) -> object:
        if shape.enum and value not in shape.enum:
            self.error(node, path, _must(shape, value) + _did_you_mean(value, shape.enum))
            return INVALID
        too_long = shape.max_length is not None and len(value) > shape.max_length
        if too_long or (shape.pattern and re.fullmatch(shape.pattern, value) is None):
            self.error(node, path, _must(shape, value))
            return INVALID
        message = shape.check(value) if shape.check else None
        if message:
            self.error(node, path, message)
            return INVALID
        return value

    def _wrong(self, node: yaml.Node, value: object, shape: Shape, path: str) -> object:
        self.error(node, path, _must(shape, value, node))
        return INVALID

    def _not_a(self, node: yaml.Node, shape: Shape, path: str) -> object:
        value = self.scalar(node, path)
        return INVALID if value is INVALID else self._wrong(node, value, shape, path)

    def _read_list(self, node: yaml.Node, shape: ListOf, path: str) -> object:
        if not isinstance(node, yaml.SequenceNode):
            return self._not_a(node, shape, path)
        items: list[object] = []
        for i, item in enumerate(node.value):
            value = self.read(item, shape.item, f"{path}[{i}]")
            if value is not INVALID:
                items.append(value)
            elif isinstance(shape.item, Obj):  # keep indices aligned with the file
                items.append(Fields(f"{path}[{i}]", origin_of(self.file, item), {}))
        count = len(node.value)
        if count < shape.min_items:
            self.error(node, path, f"must have at least {shape.min_items} item(s), got {count}")
        elif shape.max_items is not None and count > shape.max_items:
            self.error(node, path, f"must have at most {shape.max_items} item(s), got {count}")
        return items

    def _read_map(self, node: yaml.Node, shape: MapOf, path: str) -> object:
        if not isinstance(node, yaml.MappingNode):
            return self._not_a(node, shape, path)
        out: dict[str, object] = {}
        for key_node, value_node in self._pairs(node, path):
            key = f"{path}.{key_node.value}"
            checked_key = self._convert(key_node, key_node.value, shape.key, key)
            value = self.read(value_node, shape.values, key)
            if checked_key is not INVALID and value is not INVALID:
                out[key_node.value] = value
        return out

    def _read_obj(self, node: yaml.Node, shape: Obj, path: str) -> object:
        if not isinstance(node, yaml.MappingNode):
            return self._not_a(node, shape, path)
        here = origin_of(self.file, node)
        values: dict[str, object] = {}
        present: dict[str, yaml.Node] = {}
        for key_node, value_node in self._pairs(node, path):
            key = key_node.value
            sub = f"{path}.{key}" if path else key
            field = shape.fields.get(key)
            if field is None:
                self.positions.setdefault(sub, origin_of(self.file, key_node))
                self.error(key_node, sub, _unknown(key, shape))
                continue
            present[key] = key_node
            self.positions[sub] = origin_of(self.file, key_node)  # the key, not the value
            value = self.read(value_node, field.shape, sub)
            if value is not INVALID:
                values[key] = value
        for key, field in shape.fields.items():
            if field.required and key not in present:
                self.error(here, path, f'missing required field "{key}"')
        self._check_choices(here, shape, present, path)
        self._check_variant(here, shape, values, present, path)
        return Fields(path, here, values)

    def _pairs(self, node: yaml.MappingNode, path: str) -> list[tuple[yaml.ScalarNode, yaml.Node]]:
        """Key/value pairs after `<<` merges; non-string and repeated keys are reported."""
        self._constructor.flatten_mapping(node)
        seen: set[str] = set()
        pairs: list[tuple[yaml.ScalarNode, yaml.Node]] = []
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.error(key_node, path, "a key must be a plain string, got a collection")
                continue
            sub = f"{path}.{key_node.value}" if path else key_node.value
            if key_node.value in seen:
                self.error(key_node, sub, f'duplicate key "{key_node.value}"')
                continue
            seen.add(key_node.value)
            pairs.append((key_node, value_node))
        return pairs

    def _check_choices(
        self, here: Origin, shape: Obj, present: Mapping[str, yaml.Node], path: str
    ) -> None:
        for choice in shape.choices:
            used = [alt for alt in choice.alternatives if any(f in present for f in alt)]
            names = " or ".join(_alt(alt) for alt in choice.alternatives)
            if len(used) > 1:
                extra = present[next(f for f in used[1] if f in present)]
                self.error(extra, path, f"give only one of {names}")
            elif not used and choice.required:
                self.error(here, path, f"needs one of {names}")
            elif used:
                missing = [f for f in used[0] if f not in present]
                if missing:
                    given = next(f for f in used[0] if f in present)
                    self.error(here, path, f'"{given}" needs "{missing[0]}" too')

    def _check_variant(
        self,
        here: Origin,
        shape: Obj,
        values: Mapping[str, object],
        present: Mapping[str, yaml.Node],
        path: str,
    ) -> None:
        if shape.discriminator is None:
            return
        chosen = values.get(shape.discriminator)
        if not isinstance(chosen, str):  # missing or invalid: already reported
            return
        variant = shape.variants[chosen]
        allowed = {*variant.required, *variant.optional}
        for key in sorted(shape.variant_fields() - allowed):
            if key in present:
                sub = f"{path}.{key}"
                message = f'"{key}" is not allowed when {shape.discriminator} is {chosen}'
                self.error(present[key], sub, message)
        for key in variant.required:
            if key not in present:
                message = f'{shape.discriminator} {chosen} needs the field "{key}"'
                self.error(here, path, message)


INVALID = object()  # what `Reader.read` returns for a value it has reported as wrong


@dataclasses.dataclass(frozen=True, slots=True)
class _Collection:
    """A non-scalar where a scalar was expected; only ever described in a message."""

    node: yaml.Node


def _in_int(value: int, shape: Int) -> bool:
    if shape.choices:
        return value in shape.choices
    lo_ok = shape.minimum is None or value >= shape.minimum
    return lo_ok and (shape.maximum is None or value <= shape.maximum)


def _in_num(value: object, shape: Num) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    low = shape.minimum
    if low is not None and (value < low or (shape.exclusive_minimum and value == low)):
        return False
    return shape.maximum is None or value <= shape.maximum


def _must(shape: Shape, value: object, node: yaml.Node | None = None) -> str:
    return f"must be {describe(shape)}, got {_seen(value, node)}"


def _seen(value: object, node: yaml.Node | None) -> str:
    if isinstance(value, _Collection):
        return "a list" if isinstance(value.node, yaml.SequenceNode) else "a mapping"
    if value is None:
        return "null"
    if isinstance(value, str):
        text = json.dumps(value)
        return text if len(text) <= 80 else text[:76] + '..."'
    raw = node.value if isinstance(node, yaml.ScalarNode) else str(value)
    if isinstance(value, bool) and raw.lower() not in ("true", "false"):
        return f"{raw} (YAML reads it as {str(value).lower()}; quote it to mean the text)"
    if isinstance(value, datetime.date):
        return f"{raw} (a YAML timestamp; quote it)"
    return raw


def _unknown(key: str, shape: Obj) -> str:
    if key in shape.notes:
        return f'field "{key}" is not allowed here: {shape.notes[key]}'
    return f'unknown field "{key}"' + _did_you_mean(key, list(shape.fields))


def _did_you_mean(word: str, choices: Mapping[str, object] | list[str] | tuple[str, ...]) -> str:
    close = suggest(word, list(choices))
    return f'; did you mean "{close}"?' if close else ""


def suggest(word: str, choices: list[str]) -> str | None:
    """The choice `word` most likely misspells: fewest edits (a swap counts as one), else
    difflib's best match; None when nothing is close."""
    best: tuple[int, str] | None = None
    for choice in choices:
        distance = _edits(word.lower(), choice.lower())
        if best is None or distance < best[0]:
            best = (distance, choice)
    if best is not None and best[0] <= max(1, len(word) // 3):
        return best[1]
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return close[0] if close else None


def _edits(a: str, b: str) -> int:
    """Optimal string alignment distance (Levenshtein plus adjacent transpositions)."""
    rows = [list(range(len(b) + 1))]
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            row[j] = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], rows[-2][j - 2] + 1)
        rows.append(row)
    return rows[-1][-1]


def _alt(fields: tuple[str, ...]) -> str:
    return " with ".join(f'"{f}"' for f in fields)
