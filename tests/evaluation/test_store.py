"""EmbeddingSplit: the one reader and writer of `<split>.npy/.csv/.json`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from audiocpc.errors import AudiocpcError
from audiocpc.evaluation.store import MANIFEST_COLUMNS, EmbeddingSplit


def _split(rows: int = 4) -> EmbeddingSplit:
    rng = np.random.default_rng(0)
    return EmbeddingSplit(rng.standard_normal((rows, 3)).astype(np.float32),
                          [f"dir/f{i // 2}.wav" for i in range(rows)],
                          ["a", "", "b", " b "][:rows], np.arange(rows) * 0.5, np.full(rows, 1.0),
                          {"kind": "context"})


def test_what_is_written_reads_back(tmp_path: Path) -> None:
    written = _split().write(tmp_path / "emb", "test")
    assert written.array_path == tmp_path / "emb" / "test.npy"
    back = EmbeddingSplit.read(tmp_path / "emb", "test")
    assert np.array_equal(back.features, written.features) and back.files == written.files
    assert back.labels == ["a", "", "b", " b "] and np.allclose(back.start_seconds, [0, 0.5, 1, 1.5])
    assert back.info["kind"] == "context"
    assert back.info["content"] == EmbeddingSplit.content(tmp_path / "emb", "test")
    assert (tmp_path / "emb" / "test.csv").read_text().splitlines()[0] == ",".join(MANIFEST_COLUMNS)
    labelled = back.labelled()
    assert labelled.labels == ["a", "b", "b"] and len(labelled) == 3


def test_a_set_is_complete_only_when_its_files_belong_together(tmp_path: Path) -> None:
    folder = tmp_path / "emb"
    assert not EmbeddingSplit.complete(folder, "train")
    _split().write(folder, "train")
    assert EmbeddingSplit.complete(folder, "train")
    # a writer killed after the array, before the JSON: the old JSON's hashes no longer match
    np.save(folder / "train.npy", np.zeros((4, 3), dtype=np.float32))
    assert EmbeddingSplit.exists(folder, "train") and not EmbeddingSplit.complete(folder, "train")
    _split().write(folder, "train")
    (folder / "train.json").unlink()  # killed before the JSON was written again
    assert not EmbeddingSplit.complete(folder, "train")
    EmbeddingSplit.remove(folder, "train")
    assert not EmbeddingSplit.exists(folder, "train")


def test_mismatched_or_unlabelled_files_give_one_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "emb"
    _split().write(folder, "train")
    np.save(folder / "train.npy", np.zeros((3, 3), dtype=np.float32))
    with pytest.raises(AudiocpcError, match="lists 4 crops but train.npy holds 3 rows"):
        EmbeddingSplit.read(folder, "train")
    unlabelled = _split()
    unlabelled.labels = ["", "", " ", ""]
    unlabelled.write(folder, "test")
    with pytest.raises(AudiocpcError, match="no crop has a label"):
        EmbeddingSplit.read(folder, "test").labelled()
    with pytest.raises(AudiocpcError, match="run `audiocpc embed` first"):
        EmbeddingSplit.read(folder, "other")
