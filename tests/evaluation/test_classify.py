"""What classify records and refuses, function by function: the feature kind of an embeddings
folder, the inputs recorded in metrics.json, non-finite rows anywhere in the array."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from audiocpc.errors import AudiocpcError
from audiocpc.evaluation.classify import (check_same_embedding, classify, classify_inputs, feature_kind,
                                          load_split)
from audiocpc.evaluation.probe import ProbeSettings
from audiocpc.evaluation.store import EmbeddingSplit


def _split(folder: Path, split: str, features: np.ndarray, meta: dict | None = None) -> EmbeddingSplit:
    rows = len(features)  # two crops per file, files alternating between classes a and b
    return EmbeddingSplit(features, [f"f{i // 2}.wav" for i in range(rows)],
                          ["ab"[i // 2 % 2] for i in range(rows)], np.zeros(rows), np.ones(rows),
                          meta or {}).write(folder, split)


def test_feature_kind_names_the_untrained_model_by_its_metadata_or_its_folder() -> None:
    assert feature_kind({"features": "mfcc"}, "run_mfcc") == "mfcc"
    assert feature_kind({"random_init": True}, "run") == "random"
    assert feature_kind({}, "run_random") == "random"
    assert feature_kind({"random_init": False}, "run") == "cpc"


def test_the_recorded_inputs_say_how_the_test_side_was_made(tmp_path: Path) -> None:
    features = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    _split(tmp_path, "train", features)
    settings = ProbeSettings(kind="mlp", c=0.5, seed=3)
    by_file = classify_inputs(tmp_path, ["logreg"], settings, test_fraction=0.3, seed=3)
    assert by_file["settings"]["split"] == {"mode": "by file", "test_fraction": 0.3, "seed": 3}
    assert list(by_file["embeddings"]) == ["train"]
    probe = by_file["settings"]["probe"]
    assert "kind" not in probe and probe["c"] == 0.5 and probe["seed"] == 3
    _split(tmp_path, "test", features)
    with_test = classify_inputs(tmp_path, ["logreg"], settings, test_fraction=0.3, seed=3)
    assert with_test["settings"]["split"] == {"mode": "test split"}
    assert list(with_test["embeddings"]) == ["train", "test"]


def test_a_non_finite_value_in_the_first_row_is_found(tmp_path: Path) -> None:
    features = np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32)
    features[0, 1] = np.nan
    _split(tmp_path, "train", features)
    with pytest.raises(AudiocpcError, match="1 of 6 rows hold NaN"):
        load_split(tmp_path, "train")


def test_a_non_finite_value_past_the_first_block_of_rows_is_found(tmp_path: Path) -> None:
    # the check reads the (memory-mapped) array in blocks of 65536 rows: the last one counts too
    features = np.zeros((70_001, 2), dtype=np.float32)
    features[70_000, 0] = np.inf
    _split(tmp_path, "train", features)
    with pytest.raises(AudiocpcError, match="1 of 70001 rows hold NaN"):
        load_split(tmp_path, "train")


def test_splits_embedded_differently_are_refused_with_the_command_that_fixes_it(tmp_path: Path) -> None:
    features = np.zeros((4, 3), dtype=np.float32)
    meta = {"kind": "context", "run_dir": "results/cpc/run", "random_init": True}
    train = _split(tmp_path / "a", "train", features, meta)
    test = _split(tmp_path / "a", "test", features, {**meta, "kind": "z_mean", "data_dir": "clips/test"})
    with pytest.raises(AudiocpcError) as err:
        check_same_embedding(tmp_path / "a", train, test)
    assert str(err.value).endswith("kind: train 'context', test 'z_mean'); re-embed the test split like "
                                   "the train split: audiocpc embed results/cpc/run --data clips/test "
                                   "--split test --kind context --random-init")
    # MFCC features come from `audiocpc mfcc`, not `audiocpc embed`: no embed command offered
    mfcc = {"features": "mfcc", "kind": "context", "run_dir": "results/cpc/run"}
    train = _split(tmp_path / "b", "train", features, mfcc)
    test = _split(tmp_path / "b", "test", np.zeros((4, 5), dtype=np.float32), mfcc)
    with pytest.raises(AudiocpcError) as err:
        check_same_embedding(tmp_path / "b", train, test)
    assert str(err.value).endswith("dimensions: train 3, test 5); re-embed the test split like the train split")


def test_split_csv_counts_the_crops_of_each_file_on_its_side(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(2)
    features = np.concatenate([rng.normal(-2, 1, (2, 3)) if i % 2 == 0 else rng.normal(2, 1, (2, 3))
                               for i in range(8)]).astype(np.float32)   # 8 files x 2 crops
    _split(tmp_path / "emb", "train", features)
    with caplog.at_level("INFO", logger="audiocpc"):
        classify(tmp_path / "emb", tmp_path / "out" / "new", probes=["logreg"], test_fraction=0.25)
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("emb: train side: ") for m in said) and any(m.startswith("emb: test side: ") for m in said)
    rows = (tmp_path / "out" / "new" / "split.csv").read_text().splitlines()  # folder made
    assert rows[0] == "file,label,side,crops"
    sides = {line.split(",")[0]: line.split(",")[2:] for line in rows[1:]}
    assert len(sides) == 8 and all(crops == "2" for _, crops in sides.values())
    assert sorted(side for side, _ in sides.values()) == ["test"] * 2 + ["train"] * 6


def test_mfcc_train_rows_against_model_test_rows_are_refused(tmp_path: Path) -> None:
    # an MFCC folder's metadata may carry the model's settings too: its kind is still mfcc
    features = np.zeros((4, 3), dtype=np.float32)
    train = _split(tmp_path, "train", features, {"features": "mfcc", "kind": "context"})
    test = _split(tmp_path, "test", features, {"kind": "context"})
    with pytest.raises(AudiocpcError, match="kind: train 'mfcc', test 'context'"):
        check_same_embedding(tmp_path, train, test)
