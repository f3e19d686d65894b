"""classify edge cases give one line each, never an sklearn traceback (issue 14, item 12):
test classes that training never saw, a PCA size that is not positive, NaN embeddings."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from audiocpc.cli import main
from audiocpc.errors import AudiocpcError
from audiocpc.evaluation.classify import classify
from audiocpc.evaluation.probe import ProbeSettings, fit_probe


def _write(folder: Path, split: str, features: np.ndarray, labels: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{split}.npy", features.astype(np.float32))
    with open(folder / f"{split}.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "file", "start_seconds", "duration_seconds", "label"])
        for i, label in enumerate(labels):
            writer.writerow([i, f"{label}/{label}.{i // 3:05d}.wav", 0.0, 1.0, label])
    (folder / f"{split}.json").write_text(json.dumps({"split": split, "rows": len(labels)}))


def _folder(tmp_path: Path, train_labels: list[str], test_labels: list[str] | None = None,
            train_features: np.ndarray | None = None) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path / "results" / "embeddings" / "m"
    features = rng.normal(size=(len(train_labels), 6)) if train_features is None else train_features
    _write(folder, "train", features, train_labels)
    if test_labels is not None:
        _write(folder, "test", rng.normal(size=(len(test_labels), 6)), test_labels)
    return folder


def _one_line(exc: pytest.ExceptionInfo[AudiocpcError]) -> str:
    message = str(exc.value)
    assert "\n" not in message and len(message) < 400, message
    return message


def test_every_test_class_unseen_in_training(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["a"] * 12 + ["b"] * 12, ["c"] * 6 + ["d"] * 6)
    with pytest.raises(AudiocpcError) as err:
        classify(folder, tmp_path / "out")
    message = _one_line(err)
    assert "c, d" in message and "a, b" in message


@pytest.mark.parametrize("dim", [0, -3])
def test_pca_size_must_be_positive(dim: int, tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["a"] * 12 + ["b"] * 12, ["a"] * 6 + ["b"] * 6)
    with pytest.raises(AudiocpcError) as err:
        classify(folder, tmp_path / "out", settings=ProbeSettings(pca_dim=dim))
    assert "--pca" in _one_line(err)
    with pytest.raises(AudiocpcError, match="--pca"):
        fit_probe(np.zeros((4, 3)), ["a", "a", "b", "b"], ProbeSettings(pca_dim=dim))


@pytest.mark.parametrize("command", ["classify", "run"])
def test_cli_refuses_pca_below_one_before_any_work(command: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    folder = _folder(tmp_path, ["a"] * 12 + ["b"] * 12, ["a"] * 6 + ["b"] * 6)
    args = ([command, str(folder), "--pca", "0"] if command == "classify" else
            [command, "--models", "1dconv_tiny", "--train-data", str(tmp_path / "none"),
             "--out", str(tmp_path / "r"), "--pca", "-3"])
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--pca" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_nan_embeddings_are_named(tmp_path: Path) -> None:
    features = np.random.default_rng(1).normal(size=(24, 6))
    features[5, 2] = np.nan
    features[7, 0] = np.inf
    folder = _folder(tmp_path, ["a"] * 12 + ["b"] * 12, ["a"] * 6 + ["b"] * 6, features)
    with pytest.raises(AudiocpcError) as err:
        classify(folder, tmp_path / "out")
    message = _one_line(err)
    assert "train.npy" in message and "2 of 24" in message and "embed" in message


def test_nan_embeddings_exit_2_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    features = np.full((24, 6), np.nan)
    folder = _folder(tmp_path, ["a"] * 12 + ["b"] * 12, None, features)
    assert main(["classify", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
