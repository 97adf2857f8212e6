"""JSON schemas of the records: take a record class, return its JSON Schema (draft 2020-12) from its fields.

``python -m kernel_sentinel.records.schema [DIR]`` writes one ``<name>.schema.json`` per record into DIR
(default ``docs/schemas``); tests/test_records.py checks that the files there are current.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from . import RECORDS
from .base import Record

DRAFT = "https://json-schema.org/draft/2020-12/schema"
_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", list: "array",
               type(None): "null"}


def _type_of(hint: Any) -> list[str]:
    """Return the JSON types of a type hint (``int | None`` -> ["integer", "null"])."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        out: list[str] = []
        for arg in typing.get_args(hint):
            out += [t for t in _type_of(arg) if t not in out]
        return out
    if origin is not None:
        hint = origin
    if isinstance(hint, type) and issubclass(hint, Record):
        return ["object"]
    return [_JSON_TYPES.get(hint, "string")]


def schema_of(cls: type[Record], *, root: bool = True) -> dict[str, Any]:
    """Return the JSON Schema of record class ``cls``: its fields, their types and words; others allowed."""
    hints = typing.get_type_hints(cls)
    props: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        words = dict(f.metadata.get("schema", {}))
        nested = words.pop("items", None)
        prop: dict[str, Any] = {}
        types_ = words.pop("type", None) or _type_of(hints[f.name])
        if isinstance(nested, type) and issubclass(nested, Record):
            sub = schema_of(nested, root=False)
            if "array" in types_:
                prop["items"] = sub
            else:
                prop.update({k: v for k, v in sub.items() if k != "type"})
        prop["type"] = types_[0] if len(types_) == 1 else types_
        if "description" in words:
            prop = {"description": words.pop("description"), **prop}
        if "enum" in words and "null" in types_:
            words["enum"] = [*words["enum"], None]
        prop.update(words)
        props[f.name] = prop
    out: dict[str, Any] = {}
    if root:
        out = {"$schema": DRAFT, "$id": cls.SCHEMA_ID, "title": cls.TITLE}
    out["description"] = (cls.__doc__ or "").strip().splitlines()[0]
    out.update({"type": "object", "properties": props, "required": list(cls.REQUIRED), "additionalProperties": True})
    return out


def schema_files() -> dict[str, str]:
    """Return {file name: JSON text} for every record."""
    out = {}
    for cls in RECORDS:
        name = "".join("_" + c.lower() if c.isupper() else c for c in cls.__name__).lstrip("_")
        out[f"{name}.schema.json"] = json.dumps(schema_of(cls), indent=2) + "\n"
    return out


def main(argv: list[str] | None = None) -> int:
    """Write the schemas into the folder given (default docs/schemas); return the exit code."""
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0] if args else "docs/schemas")
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in schema_files().items():
        (folder / name).write_text(text)
        print(folder / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
