"""Model dataclasses ⇄ plain JSON values, field by field, with precise errors. Pure.

The value codec under `policies.snapshot`: `endpoint_rows` and `endpoints` carry the bulk of a
snapshot (each target's endpoints) as compact rows; `plain` writes a frozen model value
(dataclasses, enums, tuples, scalars) leaving out fields at their default; `decode` rebuilds it
from its type hints and names the offending field
(`routes[3].rules[0].settings.timeouts.request_s: must be float, got str 'fast'`) in a
SnapshotError.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from policies.errors import SnapshotError
from policies.model import (
    HeaderModifier,
    Match,
    Origin,
    PathKind,
    PathMatch,
    Problem,
    ServiceRef,
)
from policies.table import CompiledMatch, Endpoint, compile_match

WIRE = Origin("<snapshot>", 0, 0)

T = TypeVar("T")
Json = Any  # what json.loads gives back


def error(path: str, message: str) -> SnapshotError:
    return SnapshotError((Problem(WIRE, path or "snapshot", message),))


def plain_match(match: Match) -> Json:
    """`plain(match)` for the most common value on the wire, written out for speed."""
    path = match.path
    out: dict[str, Json] = {"path": {"kind": path.kind._value_, "value": path.value}}
    if match.headers:
        out["headers"] = plain(match.headers)
    if match.query_params:
        out["query_params"] = plain(match.query_params)
    if match.method is not None:
        out["method"] = match.method
    return out


def compact(fields: dict[str, Json]) -> dict[str, Json]:
    """`fields` without its empty lists and None values (the reader's defaults)."""
    return {k: v for k, v in fields.items() if v is not None and v != []}


def endpoint_rows(found: Iterable[Endpoint]) -> list[Json]:
    """`found` as `[host, port, cluster, zone?, ready?]` rows, in order.

    Endpoints are the bulk of a snapshot (tens of thousands), hence rows rather than objects,
    without their trailing defaults.
    """
    rows: list[Json] = []
    for e in found:
        if not e.ready:
            rows.append([e.host, e.port, e.cluster, e.zone, False])
        elif e.zone is not None:
            rows.append([e.host, e.port, e.cluster, e.zone])
        else:
            rows.append([e.host, e.port, e.cluster])
    return rows


# Endpoints are built by setting their slots directly: a frozen dataclass's __init__ goes through
# object.__setattr__ per field, and that is half the cost of decoding a snapshot's 50,000
# endpoints. The assert keeps this in step with the class (it has no __post_init__ to skip).
_ENDPOINT_FIELDS = ("host", "port", "cluster", "zone", "ready")
assert tuple(f.name for f in dataclasses.fields(Endpoint)) == _ENDPOINT_FIELDS
assert not hasattr(Endpoint, "__post_init__")
_SET_ENDPOINT = tuple(Endpoint.__dict__[name].__set__ for name in _ENDPOINT_FIELDS)


def endpoints(rows: Json, where: str = "endpoints") -> list[Endpoint]:
    """`endpoint_rows`' rows as Endpoints, in a tight loop (no per-field type dispatch)."""
    if type(rows) is not list:
        raise error(where, f"must be a list, got {type(rows).__name__}")
    decoded = []
    new, cls = object.__new__, Endpoint
    set_host, set_port, set_cluster, set_zone, set_ready = _SET_ENDPOINT
    for i, row in enumerate(rows):
        size = len(row) if type(row) is list else 0
        if 3 <= size <= 5:
            host, port, cluster = row[0], row[1], row[2]
            zone = row[3] if size > 3 else None
            ready = row[4] if size > 4 else True
            if (
                type(host) is str
                and type(port) is int
                and type(cluster) is str
                and (zone is None or type(zone) is str)
                and type(ready) is bool
            ):
                e = new(cls)
                set_host(e, host)
                set_port(e, port)
                set_cluster(e, cluster)
                set_zone(e, zone)
                set_ready(e, ready)
                decoded.append(e)
                continue
        raise error(
            f"{where}[{i}]",
            f"must be [host: str, port: int, cluster: str, zone: str | null, ready: bool]"
            f" without its trailing defaults, got {row!r}",
        )
    return decoded


_FIELDS: dict[type, tuple[tuple[str, object], ...]] = {}
_NO_DEFAULT = object()


def plain(value: object) -> Json:
    """Model dataclasses, enums and tuples as JSON values.

    A dataclass field equal to its default is left out (most settings are defaults): the wire
    form stays small and `decode` gets the default back from the dataclass itself.
    """
    if value is None or isinstance(value, (str, int, float)):
        return value
    if isinstance(value, enum.Enum):
        return value._value_  # the `.value` property is Python code
    if isinstance(value, tuple):
        return [plain(v) for v in value] if value else []
    cls: Any = type(value)
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = _FIELDS[cls] = tuple(
            (f.name, _NO_DEFAULT if f.default is dataclasses.MISSING else f.default)
            for f in dataclasses.fields(cls)
            if f.init
        )
    out = {}
    for name, default in fields:
        field = getattr(value, name)
        if field is not default and field != default:
            out[name] = plain(field)
    return out


def typed(cls: type[T], value: Json, where: str) -> T:
    """`value` as a `cls` (int, float, str or bool), exactly: JSON `true` is not an integer."""
    if type(value) is cls:
        return value
    decoded: T = decode_scalar(cls, value, where)
    return decoded


_HINTS: dict[type, dict[str, Any]] = {}


def decode(tp: Any, value: Json, where: str) -> Any:
    """Rebuild a value of type `tp` from `plain`'s output; SnapshotError names the bad field."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(tp)):
            return None
        (tp,) = options  # the model only uses `X | None`
        origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list):
            raise error(where, f"must be a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise error(where, f"must have {len(args)} items, got {len(value)}")
        return tuple(
            decode(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise error(where, f"must be one of {[m.value for m in tp]}, got {value!r}") from None
    if dataclasses.is_dataclass(tp):
        return _decode_dataclass(tp, value, where)
    return decode_scalar(tp, value, where)


def _decode_dataclass(tp: Any, value: Json, where: str) -> Any:
    if not isinstance(value, dict):
        raise error(where, f"must be an object, got {type(value).__name__}")
    hints = _HINTS.get(tp)
    if hints is None:
        hints = _HINTS[tp] = {
            f.name: typing.get_type_hints(tp)[f.name] for f in dataclasses.fields(tp) if f.init
        }
    unknown = sorted(set(value) - set(hints))
    if unknown:
        raise error(where, f"has unknown fields {unknown}")
    return tp(**{k: decode(hints[k], v, f"{where}.{k}") for k, v in value.items()})


_SCALARS: dict[Any, Callable[[Json], bool]] = {
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
    bool: lambda v: isinstance(v, bool),
}


def decode_scalar(tp: Any, value: Json, where: str) -> Any:
    check = _SCALARS.get(tp)
    if check is None or not check(value):
        name = getattr(tp, "__name__", str(tp))
        raise error(where, f"must be {name}, got {type(value).__name__} {value!r}")
    return float(value) if tp is float else value


def service_ref(value: Json, where: str) -> ServiceRef:
    """`decode(ServiceRef, ...)`, direct for the well-formed case (one per spread)."""
    if (
        type(value) is dict
        and len(value) == 3
        and type(value.get("namespace")) is str
        and type(value.get("name")) is str
        and type(value.get("port")) is int
    ):
        return ServiceRef(value["namespace"], value["name"], value["port"])
    return typing.cast(ServiceRef, decode(ServiceRef, value, where))


def modifiers(data: Mapping[str, Json], key: str, where: str) -> tuple[HeaderModifier, ...]:
    """The header filters under `data[key]` (none when absent)."""
    modifiers: tuple[HeaderModifier, ...] = decode(
        tuple[HeaderModifier, ...], data.get(key, []), f"{where}.{key}"
    )
    return modifiers


_PATH_KINDS = {kind.value: kind for kind in PathKind}


def compiled_match(data: Json, where: str) -> CompiledMatch:
    """A candidate's match from the wire, compiled; the common path-only match decoded directly."""
    match: Match | None = None
    if type(data) is dict and data.keys() == {"path"}:  # the common case, decoded directly
        path = data["path"]
        if type(path) is dict and path.keys() == {"kind", "value"} and type(path["value"]) is str:
            kind = _PATH_KINDS.get(path["kind"])
            if kind is not None:
                match = Match(PathMatch(kind, path["value"]))
    if match is None:
        match = decode(Match, data, where)
    try:
        return compile_match(match)
    except re.error as exc:
        raise error(where, f"invalid regular expression: {exc}") from exc
