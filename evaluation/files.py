"""Files: the project's one atomic write, its one sha256 of a file, and the strict-JSON round trip of
the result dataclasses that have to_dict/from_dict.

- `atomic_writer(path, mode)`: a context manager that writes a temporary file next to `path`, flushes
  it to disk and renames it over `path` (`os.replace`), so a reader sees the old file or the new one,
  never half of one; on an error the temporary file is removed and `path` is left as it was.
  `write_text_atomic`, `write_bytes_atomic` and `write_json_atomic` are built on it.
- `file_sha256(path)`: hex sha256 of the file's bytes (read in blocks); `file_fingerprint(path)` is
  the same hash labelled `"sha256:<hex>"`, the form reports and audit records store.

Imports the standard library only.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T", bound="JsonRoundTrip")

_HASH_BLOCK = 1 << 20


# --- atomic writes --------------------------------------------------------------------------------


@contextmanager
def atomic_writer(path: str | Path, mode: str = "w", encoding: str = "utf-8") -> Iterator[IO[Any]]:
    """Yield a handle open for writing (`mode` "w" for text, "wb" for bytes) on a temporary file in
    `path`'s folder (created if missing); on a clean exit flush and fsync it, then rename it over
    `path`. The temporary file is created like any new file (permissions follow the umask) under a
    hidden name ending in ".tmp", so folder listings by suffix never pick it up."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        if mode == "w":
            handle = open(tmp, "x", encoding=encoding)
        else:
            handle = open(tmp, "xb")
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left behind when something failed before the rename


def write_text_atomic(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    path = Path(path)
    with atomic_writer(path, "w", encoding=encoding) as handle:
        handle.write(text)
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    with atomic_writer(path, "wb") as handle:
        handle.write(data)
    return path


def write_json_atomic(path: str | Path, data: Any, *, indent: int | None = None, sort_keys: bool = False) -> Path:
    """Strict JSON (no NaN/Infinity tokens: a non-finite float raises before anything is written)."""
    return write_text_atomic(path, json.dumps(data, indent=indent, sort_keys=sort_keys, allow_nan=False))


# --- content hashes -------------------------------------------------------------------------------


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def file_fingerprint(path: str | Path) -> str:
    """"sha256:<hex>" of the file's bytes: two runs on the same data carry the same fingerprint."""
    return f"sha256:{file_sha256(path)}"


# --- JSON round trip ------------------------------------------------------------------------------


class JsonRoundTrip:
    """Adds to_json/from_json/write_json/read_json to a class with to_dict() and from_dict()."""

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls: type[T], s: str) -> T:
        return cls.from_dict(json.loads(s))

    def write_json(self, path: str | Path) -> Path:
        """Written atomically (`write_text_atomic`): readers never see a half-written file."""
        return write_text_atomic(Path(path), self.to_json())

    @classmethod
    def read_json(cls: type[T], path: str | Path) -> T:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))
