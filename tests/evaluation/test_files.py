"""evaluation/files.py: the one atomic write and the one sha256 of a file."""

import hashlib
import json
import math
import os
import stat

import pytest

from evaluation.files import (
    atomic_writer,
    file_fingerprint,
    file_sha256,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)


def test_write_text_atomic_creates_folders_and_replaces(tmp_path):
    path = tmp_path / "a" / "b" / "report.json"
    assert write_text_atomic(path, "first") == path
    assert path.read_text(encoding="utf-8") == "first"
    write_text_atomic(path, "second é")
    assert path.read_text(encoding="utf-8") == "second é"
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.json"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "state.json"
    write_text_atomic(path, "old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_writer(path) as handle:
            handle.write("half of the new")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_write_json_atomic_is_strict_and_writes_nothing_on_nan(tmp_path):
    path = write_json_atomic(tmp_path / "entry.json", {"b": 1, "a": [1.5, None]}, indent=2, sort_keys=True)
    assert path.read_text() == json.dumps({"b": 1, "a": [1.5, None]}, indent=2, sort_keys=True)
    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "bad.json", {"x": math.nan})
    assert not (tmp_path / "bad.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry.json"]


def test_write_bytes_atomic_and_binary_mode(tmp_path):
    path = write_bytes_atomic(tmp_path / "x.bin", b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    with atomic_writer(path, "wb") as handle:
        handle.write(b"\x02")
    assert path.read_bytes() == b"\x02"
    with pytest.raises(ValueError, match="mode"):
        with atomic_writer(path, "a"):
            pass


def test_atomic_files_get_the_permissions_of_a_plain_write(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic = write_text_atomic(tmp_path / "atomic.txt", "x")
    assert stat.S_IMODE(os.stat(atomic).st_mode) == stat.S_IMODE(os.stat(plain).st_mode)


def test_file_sha256_and_fingerprint_known_answers(tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert file_sha256(empty) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    abc = tmp_path / "abc"
    abc.write_bytes(b"abc")
    assert file_fingerprint(abc) == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    big = tmp_path / "big"  # more than one read block
    data = os.urandom((1 << 20) + 123)
    big.write_bytes(data)
    assert file_sha256(str(big)) == hashlib.sha256(data).hexdigest()
