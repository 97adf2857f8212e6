"""The record base: take a dataclass of plain fields, give it ``to_dict``/``from_dict`` that keep JSON exact.

A record read with ``from_dict`` writes back the same keys in the same order (keys it does not know
included, in ``extra``), so a record can sit between a producer and a JSON contract without changing
one byte of it. A record built in code writes its fields in declaration order, leaving out the optional
ones that are None (``Field(optional=True)``), as the producers always did. A leaf: standard library only.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar, TypeVar

R = TypeVar("R", bound="Record")


def optional(default: Any = None, **schema: Any) -> Any:
    """Return a dataclass field left out of ``to_dict`` while it is None (a key producers add only when known)."""
    return dataclasses.field(default=default, metadata={"optional": True, "schema": schema})


def required(**schema: Any) -> Any:
    """Return a dataclass field with no default (the constructor needs it), with JSON-schema words."""
    return dataclasses.field(metadata={"schema": schema})


def described(default: Any = None, **schema: Any) -> Any:
    """Return a dataclass field always written (None as null), with extra JSON-schema words for ``schema``."""
    if isinstance(default, (dict, list)):
        factory = type(default)
        return dataclasses.field(default_factory=factory, metadata={"schema": schema})
    return dataclasses.field(default=default, metadata={"schema": schema})


def _default(f: dataclasses.Field) -> Any:
    """Return a field's default value (calling its factory)."""
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None if f.default is dataclasses.MISSING else f.default


@dataclasses.dataclass
class Record:
    """Base of every record: the JSON mapping, exact both ways."""

    SCHEMA_ID: ClassVar[str] = ""
    TITLE: ClassVar[str] = ""
    REQUIRED: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        # Not dataclass fields: they are how this record was read, not what it says.
        self._extra: dict[str, Any] = {}
        self._order: tuple[str, ...] | None = None

    @property
    def extra(self) -> dict[str, Any]:
        """Return the keys read by ``from_dict`` that this record has no field for (kept, written back)."""
        return self._extra

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Return the JSON keys this record knows, in the order it writes them."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any]) -> R:
        """Return the record of a JSON mapping; unknown keys are kept and the key order remembered."""
        known = set(cls.field_names())
        rec = cls(**{k: cls._load(k, v) for k, v in data.items() if k in known})
        rec._extra = {k: v for k, v in data.items() if k not in known}
        rec._order = tuple(data)
        return rec

    @classmethod
    @functools.cache
    def nested(cls) -> dict[str, type[Record]]:
        """Return {field: record class} for the fields that hold records (declared with ``items=Record``)."""
        out = {}
        for f in dataclasses.fields(cls):
            items = f.metadata.get("schema", {}).get("items")
            if isinstance(items, type) and issubclass(items, Record):
                out[f.name] = items
        return out

    @classmethod
    def _load(cls, key: str, value: Any) -> Any:
        """Return ``value`` as the field ``key`` holds it: a nested record (or a list of them) read from JSON."""
        inner = cls.nested().get(key)
        if inner is None:
            return value
        if isinstance(value, dict):
            return inner.from_dict(value)
        if isinstance(value, list):
            return [inner.from_dict(v) if isinstance(v, dict) else v for v in value]
        return value

    def _dump(self, key: str, value: Any) -> Any:
        """Return the JSON value of field ``key``: nested records (or lists of them) written as their JSON."""
        if isinstance(value, Record):
            return value.to_dict()
        if isinstance(value, list):
            return [v.to_dict() if isinstance(v, Record) else v for v in value]
        return value

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON mapping: the keys read, in their order; else every field but unset optional ones."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self._order is not None:
            out: dict[str, Any] = {}
            for k in self._order:
                out[k] = self._dump(k, values[k]) if k in values else self._extra[k]
            for f in dataclasses.fields(self):  # set after reading: written after the keys read
                if f.name not in out and values[f.name] != _default(f):
                    out[f.name] = self._dump(f.name, values[f.name])
            for k, v in self._extra.items():
                out.setdefault(k, v)
            return out
        out = {}
        for f in dataclasses.fields(self):
            if f.metadata.get("optional") and values[f.name] is None:
                continue
            out[f.name] = self._dump(f.name, values[f.name])
        out.update(self._extra)
        return out
