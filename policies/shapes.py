"""The field tables' vocabulary: typed shapes the loader reads and the JSON Schema prints. Pure.

A document kind is described once, as nested `Obj` shapes (`policies.kinds`). `policies.reading`
checks YAML nodes against those shapes (types, ranges, enums, unknown keys, required fields) and
`policies.schema` turns the same shapes into JSON Schema, so the editor's view of a file and the
loader's can only disagree where a rule needs more than one field's value (those live in
`policies.validation`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping

# A Gateway API Duration (GEP-2257): one to four <digits><unit> pairs, e.g. "500ms", "1h30m".
DURATION_PATTERN = r"([0-9]{1,5}(h|ms|m|s)){1,4}"
_DURATION_PART = re.compile(r"([0-9]{1,5})(h|ms|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float | None:
    """Seconds in a Gateway API duration string, or None when it is not one."""
    if re.fullmatch(DURATION_PATTERN, text) is None:
        return None
    return sum(int(n) * _UNIT_S[unit] for n, unit in _DURATION_PART.findall(text))


@dataclasses.dataclass(frozen=True, slots=True)
class Str:
    """A string. `pattern` is unanchored here and must be valid in both Python and ECMA-262."""

    enum: tuple[str, ...] = ()
    pattern: str | None = None
    hint: str = "a string"  # noun phrase used in "must be <hint>, got ..."
    check: Callable[[str], str | None] | None = None  # extra rule: a message, or None when fine
    max_length: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Int:
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[int, ...] = ()

    @property
    def hint(self) -> str:
        if self.choices:
            return "one of " + ", ".join(str(c) for c in self.choices)
        return "an integer" + _range(self.minimum, self.maximum)


@dataclasses.dataclass(frozen=True, slots=True)
class Num:
    """An int or a finite float."""

    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False

    @property
    def hint(self) -> str:
        if self.exclusive_minimum and self.maximum is None:
            return f"a number > {_num(self.minimum)}"
        return "a number" + _range(self.minimum, self.maximum)


@dataclasses.dataclass(frozen=True, slots=True)
class Bool:
    hint: str = "true or false"


@dataclasses.dataclass(frozen=True, slots=True)
class Duration:
    """A Gateway API duration string, read as float seconds."""

    hint: str = 'a duration like "500ms", "5s" or "1h30m"'


@dataclasses.dataclass(frozen=True, slots=True)
class Timestamp:
    """An RFC 3339 date-time with a zone, read as epoch seconds (int)."""

    hint: str = 'an RFC 3339 timestamp like "2024-05-01T12:00:00Z"'


@dataclasses.dataclass(frozen=True, slots=True)
class Anything:
    """Accepted and ignored (e.g. HTTPRoute `parentRefs`: fleetgate is the gateway)."""

    description: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class ListOf:
    item: Shape
    min_items: int = 0
    max_items: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class MapOf:
    """A mapping with free string keys (labels, matchLabels)."""

    values: Str
    key: Str = Str()


@dataclasses.dataclass(frozen=True, slots=True)
class Field:
    shape: Shape
    required: bool = False
    doc: str = ""  # one line for the JSON Schema description (editors show it on hover)


@dataclasses.dataclass(frozen=True, slots=True)
class Choice:
    """Exactly one alternative (at most one when not `required`); an alternative's fields go
    together, e.g. `((("headerName", "headerValue"), ("cookieName", "cookieValue")))`."""

    alternatives: tuple[tuple[str, ...], ...]
    required: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class Variant:
    """Fields that belong to one value of an `Obj.discriminator` (Gateway API's union style)."""

    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Obj:
    """A mapping with fixed keys; any other key is an error ("did you mean" when close).

    `discriminator` names the field whose value selects a `Variant`: fields that belong to another
    variant are errors. `notes` explains keys that are deliberately absent (a fleetgate extension
    on an HTTPRoute, `namespace` on a cluster-scoped kind).
    """

    fields: Mapping[str, Field]
    name: str | None = None  # $defs name in the JSON Schema
    doc: str = ""
    choices: tuple[Choice, ...] = ()
    discriminator: str | None = None
    variants: Mapping[str, Variant] = dataclasses.field(default_factory=dict)
    notes: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def variant_fields(self) -> frozenset[str]:
        return frozenset(f for v in self.variants.values() for f in (*v.required, *v.optional))


Shape = Str | Int | Num | Bool | Duration | Timestamp | Anything | ListOf | MapOf | Obj


def describe(shape: Shape) -> str:
    """The noun phrase for "must be <...>" messages."""
    if isinstance(shape, Str) and shape.enum:
        return "one of " + ", ".join(shape.enum)
    if isinstance(shape, Str | Int | Num | Bool | Duration | Timestamp):
        return shape.hint
    if isinstance(shape, ListOf):
        return "a list"
    if isinstance(shape, MapOf | Obj):
        return "a mapping"
    return "anything"


def _range(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f" {_num(lo)}..{_num(hi)}"
    if lo is not None:
        return f" >= {_num(lo)}"
    if hi is not None:
        return f" <= {_num(hi)}"
    return ""


def _num(value: float | None) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
