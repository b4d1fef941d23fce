"""A small JSON-schema check for runner answers: the subset our schemas use (type, required, properties,
additionalProperties false, items, enum, min/max length and items, pattern). The CLI checks answers
against `--json-schema` itself; the Messages-API runner checks them here, so both hand the same shape on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_TYPES: Mapping[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def schema_problem(value: object, schema: Mapping[str, Any], where: str = "answer") -> str | None:
    """None when `value` fits `schema`, else the first problem found, naming where it is."""
    kind = schema.get("type")
    if isinstance(kind, str) and kind in _TYPES:
        fits = isinstance(value, _TYPES[kind]) and not (
            kind in {"integer", "number"} and isinstance(value, bool)
        )
        if not fits:
            return f"{where} must be of type {kind}, not {type(value).__name__}"
    enum = schema.get("enum")
    if isinstance(enum, list) and value not in enum:
        return f"{where} must be one of {', '.join(map(str, enum))}, not {value!r}"
    if isinstance(value, str):
        return _string_problem(value, schema, where)
    if isinstance(value, list):
        return _array_problem(value, schema, where)
    if isinstance(value, dict):
        return _object_problem(value, schema, where)
    return None


def _string_problem(value: str, schema: Mapping[str, Any], where: str) -> str | None:
    if len(value) < int(schema.get("minLength", 0)):
        return f"{where} must be at least {schema['minLength']} characters"
    if "maxLength" in schema and len(value) > int(schema["maxLength"]):
        return f"{where} must be at most {schema['maxLength']} characters"
    pattern = schema.get("pattern")
    if isinstance(pattern, str) and re.search(pattern, value) is None:
        return f"{where} must match {pattern}"
    return None


def _array_problem(value: list[Any], schema: Mapping[str, Any], where: str) -> str | None:
    if len(value) < int(schema.get("minItems", 0)):
        return f"{where} must have at least {schema['minItems']} item(s)"
    if "maxItems" in schema and len(value) > int(schema["maxItems"]):
        return f"{where} must have at most {schema['maxItems']} item(s)"
    items = schema.get("items")
    if isinstance(items, dict):
        for index, item in enumerate(value):
            if (problem := schema_problem(item, items, f"{where}[{index}]")) is not None:
                return problem
    return None


def _object_problem(value: dict[str, Any], schema: Mapping[str, Any], where: str) -> str | None:
    for key in schema.get("required", ()):
        if key not in value:
            return f"{where}.{key} is required"
    properties = schema.get("properties", {})
    if schema.get("additionalProperties") is False:
        extra = sorted(set(value) - set(properties))
        if extra:
            return f"{where}.{extra[0]} is not allowed"
    for key, sub in properties.items():
        if key not in value or not isinstance(sub, dict):
            continue
        if (problem := schema_problem(value[key], sub, f"{where}.{key}")) is not None:
            return problem
    return None
