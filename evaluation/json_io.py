"""Strict-JSON file round trip shared by the result dataclasses that have to_dict/from_dict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

T = TypeVar("T", bound="JsonRoundTrip")


class JsonRoundTrip:
    """Adds to_json/from_json/write_json/read_json to a class with to_dict() and from_dict()."""

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls: type[T], s: str) -> T:
        return cls.from_dict(json.loads(s))

    def write_json(self, path: str | Path) -> Path:
        """Write through a temporary file and rename it, so readers never see a half-written file."""
        return write_text_atomic(Path(path), self.to_json())

    @classmethod
    def read_json(cls: type[T], path: str | Path) -> T:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


def write_text_atomic(path: Path, text: str) -> Path:
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
