"""JSON Schema (draft 2020-12) for every document kind, made from the loader's field tables. Pure.

Editors (e.g. the YAML language server: `# yaml-language-server: $schema=fleetgate.schema.json`)
complete and check files with it. It covers what one field or one mapping can say: types, ranges,
enums, patterns, unknown keys, required fields and "one of" groups. Rules that compare values
(paths against their match type, regexes, filter combinations, references between documents) are
the loader's alone; `fleetgate validate` is the full check. `json_schema("GatewayConfig")` is the
gateway config file's (policies.gatewayconfig), outside the policy kinds' `oneOf`.
"""

from __future__ import annotations

from typing import Any

from policies.kinds import GATEWAY_CONFIG, KINDS
from policies.shapes import (
    DURATION_PATTERN,
    Anything,
    Bool,
    Choice,
    Duration,
    Int,
    ListOf,
    MapOf,
    Num,
    Obj,
    Shape,
    Str,
    Timestamp,
)

DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_BASE = "https://fleetgate.io/schemas/v1alpha1/"

Json = dict[str, Any]

DURATION_DEF: Json = {
    "type": "string",
    "pattern": f"^(?:{DURATION_PATTERN})$",
    "description": 'Gateway API duration: "500ms", "5s", "1m", "1h30m"; "0s" disables.',
}


# The gateway config file (`--gateway-config`) is published too, but only by its name: it is not
# a policy kind, so the all-kinds schema for policy directories does not offer it.
GATEWAY_CONFIG_KIND = "GatewayConfig"
SCHEMA_KINDS = (*KINDS, GATEWAY_CONFIG_KIND)  # what `kind` may name


def json_schema(kind: str | None = None) -> Json:
    """The schema of all policy kinds (one of them, by `kind`), or of one kind, the gateway
    config file's included. Raises KeyError."""
    defs: dict[str, Json] = {}
    if kind == GATEWAY_CONFIG_KIND:
        documents = [GATEWAY_CONFIG]
    else:
        documents = [KINDS[kind].document] if kind else [k.document for k in KINDS.values()]
    branches = [_shape(document, defs) for document in documents]
    out: Json = {"$schema": DIALECT, "$id": f"{SCHEMA_BASE}{kind or 'policies'}.json"}
    if kind is None:
        out["title"] = "fleetgate policy document"
        out["oneOf"] = branches
    else:
        out.update(branches[0])
    out["$defs"] = dict(sorted(defs.items()))
    return out


def shape_schema(shape: Shape) -> Json:
    """The schema of any one shape, with the definitions it refers to (e.g. for a CRD)."""
    defs: dict[str, Json] = {}
    out = _shape(shape, defs)
    if defs:
        out = {**out, "$defs": dict(sorted(defs.items()))}
    return out


def _shape(shape: Shape, defs: dict[str, Json]) -> Json:
    if isinstance(shape, Obj):
        return _obj(shape, defs)
    if isinstance(shape, ListOf):
        out: Json = {"type": "array", "items": _shape(shape.item, defs)}
        if shape.min_items:
            out["minItems"] = shape.min_items
        if shape.max_items is not None:
            out["maxItems"] = shape.max_items
        return out
    if isinstance(shape, MapOf):
        return {
            "type": "object",
            "propertyNames": _shape(shape.key, defs),
            "additionalProperties": _shape(shape.values, defs),
        }
    if isinstance(shape, Duration):
        defs.setdefault("Duration", DURATION_DEF)
    return _scalar(shape)


def _scalar(shape: Str | Int | Num | Bool | Duration | Timestamp | Anything) -> Json:
    if isinstance(shape, Str):
        out: Json = {"type": "string"}
        if shape.enum:
            out["enum"] = list(shape.enum)
        if shape.pattern:
            out["pattern"] = f"^(?:{shape.pattern})$"
        if shape.max_length is not None:
            out["maxLength"] = shape.max_length
        return out
    if isinstance(shape, Int):
        out = {"type": "integer"}
        if shape.choices:
            out["enum"] = list(shape.choices)
        if shape.minimum is not None:
            out["minimum"] = shape.minimum
        if shape.maximum is not None:
            out["maximum"] = shape.maximum
        return out
    if isinstance(shape, Num):
        out = {"type": "number"}
        if shape.minimum is not None:
            key = "exclusiveMinimum" if shape.exclusive_minimum else "minimum"
            out[key] = shape.minimum
        if shape.maximum is not None:
            out["maximum"] = shape.maximum
        return out
    if isinstance(shape, Bool):
        return {"type": "boolean"}
    if isinstance(shape, Duration):
        return {"$ref": "#/$defs/Duration"}
    if isinstance(shape, Timestamp):
        return {"type": "string", "format": "date-time"}
    return {}


def _obj(shape: Obj, defs: dict[str, Json]) -> Json:
    if shape.name is not None and shape.name in defs:
        return {"$ref": f"#/$defs/{shape.name}"}
    if shape.name is not None:
        defs[shape.name] = {}  # placeholder: marks the name as taken while the body is built
    properties: Json = {}
    for key, field in shape.fields.items():
        prop = _shape(field.shape, defs)
        if field.doc:
            prop = {**prop, "description": field.doc}
        properties[key] = prop
    out: Json = {"type": "object", "properties": properties, "additionalProperties": False}
    if shape.doc:
        out["description"] = shape.doc
    required = [key for key, field in shape.fields.items() if field.required]
    if required:
        out["required"] = required
    rules = [_choice(choice) for choice in shape.choices]
    if shape.discriminator is not None:
        rules.extend(_variants(shape))
    if rules:
        out["allOf"] = rules
    if shape.name is None:
        return out
    defs[shape.name] = out
    return {"$ref": f"#/$defs/{shape.name}"}


def _choice(choice: Choice) -> Json:
    """Exactly (or at most) one alternative present, and all of its fields."""
    branches: list[Json] = []
    for i, alternative in enumerate(choice.alternatives):
        others = [f for j, alt in enumerate(choice.alternatives) if j != i for f in alt]
        branch: Json = {"required": list(alternative)}
        if others:
            branch["not"] = {"anyOf": [{"required": [f]} for f in others]}
        branches.append(branch)
    if not choice.required:
        every = [f for alt in choice.alternatives for f in alt]
        branches.append({"not": {"anyOf": [{"required": [f]} for f in every]}})
    return {"oneOf": branches}


def _variants(shape: Obj) -> list[Json]:
    assert shape.discriminator is not None
    rules: list[Json] = []
    for value, variant in shape.variants.items():
        forbidden = sorted(shape.variant_fields() - {*variant.required, *variant.optional})
        then: Json = {}
        if variant.required:
            then["required"] = list(variant.required)
        if forbidden:
            then["not"] = {"anyOf": [{"required": [f]} for f in forbidden]}
        rules.append(
            {
                "if": {
                    "properties": {shape.discriminator: {"const": value}},
                    "required": [shape.discriminator],
                },
                "then": then,
            }
        )
    return rules
