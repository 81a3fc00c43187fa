"""Frozen model dataclasses ⇄ JSON-able data, driven by their type hints. Pure (no I/O).

The release state file, the operator API and the policy history all store `policies` objects
(ReleaseState, Overlay, Route, ...). Writing one encoder per class would drift from the model, so
this module walks the dataclass fields and their annotations instead:

* dataclasses become objects with one key per init field; decoding ignores unknown keys and
  leaves missing ones at their defaults, so a state file written by an older or newer fleetgate
  still loads;
* enums become their value, tuples lists, mappings objects; `X | None` is null or X;
* floats stay floats, including infinity (`pause: {}` is `math.inf`): Python's json writes it as
  `Infinity`, which every reader in fleetgate accepts.

Only the shapes the model uses are supported; anything else raises TypeError at once rather than
writing something that will not read back.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def encode(value: object) -> Any:
    """A JSON-able form of a model value (dataclass, enum, tuple, mapping or scalar)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in _init_fields(type(value))}
    if isinstance(value, tuple | list):
        return [encode(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): encode(item) for key, item in value.items()}
    raise TypeError(f"cannot encode {type(value).__name__}")


def decode(kind: type[T], data: Any) -> T:
    """The value of type `kind` that `encode` turned into `data`. Raises ValueError or TypeError
    on data of the wrong shape."""
    result: T = _decode(kind, data)
    return result


def _decode(hint: Any, data: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        args = typing.get_args(hint)
        if data is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) != 1:
            raise TypeError(f"unsupported union {hint}")
        return _decode(options[0], data)
    if origin is tuple:
        args = typing.get_args(hint)
        items = _list(data, hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], item) for item in items)
        if len(args) != len(items):
            raise ValueError(f"expected {len(args)} items for {hint}, got {len(items)}")
        return tuple(_decode(a, item) for a, item in zip(args, items, strict=True))
    if origin is Mapping or origin is dict:
        key_type, value_type = typing.get_args(hint)
        if not isinstance(data, dict):
            raise ValueError(f"expected an object for {hint}, got {type(data).__name__}")
        return {_decode(key_type, k): _decode(value_type, v) for k, v in data.items()}
    if hint is Any:
        return data
    if isinstance(hint, type):
        if dataclasses.is_dataclass(hint):
            if not isinstance(data, dict):
                raise ValueError(f"expected an object for {hint.__name__}")
            hints = _hints(hint)
            kwargs = {
                f.name: _decode(hints[f.name], data[f.name])
                for f in _init_fields(hint)
                if f.name in data
            }
            return hint(**kwargs)
        if issubclass(hint, enum.Enum):
            return hint(data)
        return _scalar(hint, data)
    raise TypeError(f"unsupported type {hint}")


def _scalar(hint: type, data: Any) -> Any:
    if hint is bool:
        if not isinstance(data, bool):
            raise ValueError(f"expected a boolean, got {data!r}")
        return data
    if hint is float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise ValueError(f"expected a number, got {data!r}")
        return float(data)
    if hint is int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise ValueError(f"expected an integer, got {data!r}")
        return data
    if hint is str:
        if not isinstance(data, str):
            raise ValueError(f"expected a string, got {data!r}")
        return data
    if hint is type(None):
        if data is not None:
            raise ValueError(f"expected null, got {data!r}")
        return None
    raise TypeError(f"unsupported type {hint.__name__}")


def _list(data: Any, hint: Any) -> list[Any]:
    if not isinstance(data, list):
        raise ValueError(f"expected a list for {hint}, got {type(data).__name__}")
    return data


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.cache
def _init_fields(cls: type) -> tuple[dataclasses.Field[Any], ...]:
    return tuple(f for f in dataclasses.fields(cls) if f.init)
