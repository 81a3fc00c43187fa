"""JSON merge patch (RFC 7386) and JSON patch (RFC 6902), for the API simulator. Pure."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: null deletes, objects merge, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def apply_json_patch(doc: Any, operations: list[Any]) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test); ValueError on a failed op."""
    result: Any = copy.deepcopy(doc)
    for op in operations:
        try:
            result = _apply_op(result, op)
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ValueError(f"json patch operation {op!r} failed: {exc}") from exc
    return result


def _apply_op(doc: Any, op: Mapping[str, Any]) -> Any:
    name, path = op["op"], _pointer(op["path"])
    if name == "test":
        if _get(doc, path) != op["value"]:
            raise ValueError("test failed")
        return doc
    if name in ("move", "copy"):
        source = _pointer(op["from"])
        value = copy.deepcopy(_get(doc, source))
        if name == "move":
            doc = _remove(doc, source)
        return _add(doc, path, value)
    if name == "remove":
        return _remove(doc, path)
    if name == "replace":
        _get(doc, path)  # must exist
        return _add(_remove(doc, path), path, copy.deepcopy(op["value"]))
    if name == "add":
        return _add(doc, path, copy.deepcopy(op["value"]))
    raise ValueError(f"unknown op {name!r}")


def _pointer(text: str) -> list[str]:
    if text == "":
        return []
    if not text.startswith("/"):
        raise ValueError(f"bad JSON pointer {text!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in text[1:].split("/")]


def _get(doc: Any, path: list[str]) -> Any:
    for token in path:
        doc = doc[int(token)] if isinstance(doc, list) else doc[token]
    return doc


def _add(doc: Any, path: list[str], value: Any) -> Any:
    if not path:
        return value
    parent = _get(doc, path[:-1])
    token = path[-1]
    if isinstance(parent, list):
        index = len(parent) if token == "-" else int(token)
        if not 0 <= index <= len(parent):
            raise IndexError(f"index {index} out of range")
        parent.insert(index, value)
    elif isinstance(parent, dict):
        parent[token] = value
    else:
        raise TypeError("parent is not a container")
    return doc


def _remove(doc: Any, path: list[str]) -> Any:
    if not path:
        raise ValueError("cannot remove the whole document")
    parent = _get(doc, path[:-1])
    if isinstance(parent, list):
        del parent[int(path[-1])]
    else:
        del parent[path[-1]]
    return doc
