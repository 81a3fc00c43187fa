"""Label and field selectors as kube-apiserver reads them, for the API simulator. Pure.

Both parsers raise ValueError on a selector the API server would refuse (the simulator answers
400 BadRequest).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

_LABEL_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_SET_TERM = re.compile(rf"\s*({_LABEL_KEY})\s+(in|notin)\s+\(([^)]*)\)\s*")
_BINARY_TERM = re.compile(rf"\s*({_LABEL_KEY})\s*(==|!=|=)\s*([-A-Za-z0-9_.]*)\s*")
_EXISTS_TERM = re.compile(rf"\s*(!?)\s*({_LABEL_KEY})\s*")

LabelTest = Callable[[Mapping[str, str]], bool]
# (key, "in" | "notin" | "exists" | "!exists", values)
Requirement = tuple[str, str, frozenset[str]]


def parse_label_selector(text: str) -> LabelTest:
    """`a=b,c!=d,e in (x,y),f notin (z),g,!h` as kube-apiserver reads it; ValueError if bad."""
    requirements: list[Requirement] = []
    for term in _split_terms(text):
        if not term.strip():
            continue
        if m := _SET_TERM.fullmatch(term):
            values = frozenset(v.strip() for v in m.group(4).split(",") if v.strip())
            requirements.append((m.group(1), m.group(3), values))
        elif m := _BINARY_TERM.fullmatch(term):
            op = "notin" if m.group(3) == "!=" else "in"
            requirements.append((m.group(1), op, frozenset({m.group(4)})))
        elif m := _EXISTS_TERM.fullmatch(term):
            op = "!exists" if m.group(1) == "!" else "exists"
            requirements.append((m.group(2), op, frozenset()))
        else:
            raise ValueError(f"unable to parse requirement: {term.strip()!r}")
    return lambda labels: all(_satisfies(labels, r) for r in requirements)


def _satisfies(labels: Mapping[str, str], requirement: Requirement) -> bool:
    key, op, values = requirement
    if op == "in":
        return labels.get(key) in values
    if op == "notin":  # a missing label satisfies != and notin
        return labels.get(key) not in values
    return (key in labels) == (op == "exists")


FieldTest = tuple[str, bool, str]  # (metadata attribute, equal?, value)


def parse_field_selector(text: str) -> Callable[[Mapping[str, Any]], bool]:
    """Only `metadata.name` and `metadata.namespace` (=, ==, !=), like most resources serve."""
    tests: list[FieldTest] = []
    for term in _split_terms(text):
        if not term.strip():
            continue
        m = re.fullmatch(r"\s*([A-Za-z.]+)\s*(==|!=|=)\s*([^,]*?)\s*", term)
        if m is None:
            raise ValueError(f"invalid field selector: {term.strip()!r}")
        field, op, value = m.groups()
        if field not in ("metadata.name", "metadata.namespace"):
            raise ValueError(f'field label not supported: "{field}"')
        tests.append((field.split(".")[1], op != "!=", value))
    return lambda obj: all(
        (_metadata(obj).get(attr, "") == value) == equal for attr, equal, value in tests
    )


def _split_terms(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    terms, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}
