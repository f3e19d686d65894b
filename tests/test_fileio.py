"""fileio: atomic replacement (old or new file, never half of one) and fingerprints."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from audiocpc.fileio import (atomic_path, atomic_save_npy, atomic_write_json, atomic_write_text,
                             files_fingerprint, read_json, sha256_file, stale_temporaries)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"old": True})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"new": tr')  # half written when the writer fails
            raise RuntimeError("disk full")
    assert json.loads(target.read_text()) == {"old": True}
    assert not stale_temporaries(target) and sorted(os.listdir(tmp_path)) == ["metrics.json"]


def test_writers_replace_whole_files_in_missing_folders(tmp_path: Path) -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    atomic_save_npy(tmp_path / "a" / "x.npy", array)
    assert np.array_equal(np.load(tmp_path / "a" / "x.npy"), array)  # no .npy appended to names
    atomic_write_text(tmp_path / "b" / "c.yaml", "seed: 1\n")
    atomic_write_text(tmp_path / "b" / "c.yaml", "seed: 2\n")
    assert (tmp_path / "b" / "c.yaml").read_text() == "seed: 2\n"
    with atomic_path(tmp_path / "plot.png", suffix=".png") as tmp:
        assert tmp.name.endswith(".png") and tmp.parent == tmp_path  # savefig reads the suffix
        tmp.write_bytes(b"png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "plot.png"]


def test_stale_temporaries_of_a_killed_writer_are_found(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint.pt"
    orphan = tmp_path / f".checkpoint.pt.{os.getpid() + 1}.abcd1234.tmp"
    orphan.write_bytes(b"half")
    (tmp_path / ".other.pt.1.ab.tmp").write_bytes(b"")
    assert stale_temporaries(target) == [orphan]


def test_fingerprints_change_with_content_size_mtime_and_membership(tmp_path: Path) -> None:
    a, b = tmp_path / "a.wav", tmp_path / "sub" / "b.wav"
    b.parent.mkdir()
    a.write_bytes(b"1234")
    b.write_bytes(b"5678")
    first = files_fingerprint(tmp_path, [a, b])
    assert first == files_fingerprint(tmp_path, [b, a]) and first["files"] == 2
    digest = sha256_file(a)
    a.write_bytes(b"4321")  # same size; a new mtime (forced, in case the clock is coarse)
    stamp = a.stat()
    os.utime(a, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))
    assert sha256_file(a) != digest  # the in-process cache notices the change
    assert files_fingerprint(tmp_path, [a, b]) != first
    assert files_fingerprint(tmp_path, [a]) != files_fingerprint(tmp_path, [a, b])


def test_read_json_is_empty_for_missing_or_damaged_files(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"a": ')
    (tmp_path / "list.json").write_text("[1]")
    assert read_json(tmp_path / "missing.json") == read_json(tmp_path / "bad.json") == {}
    assert read_json(tmp_path / "list.json") == {}
