"""Frozen config dataclasses <-> plain dicts (YAML in, JSON and MLflow params out).

One place for the two conversions every config needs: tuples become lists on the way out (JSON has no
tuples), lists become tuples on the way in (frozen configs must hold hashable values), and a misspelt
field fails with the list of fields that exist instead of a bare TypeError.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def to_plain(value: Any) -> Any:
    """A dataclass, tuple or dict as JSON-ready dicts, lists and scalars."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value


def from_plain(cls: type[T], data: dict, what: str) -> T:
    """`cls(**data)` with lists turned into tuples; `what` names the config in error messages."""
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a mapping, got {type(data).__name__}")
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{what} has no field(s) {unknown}; its fields are: {', '.join(known) or '(none)'}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
