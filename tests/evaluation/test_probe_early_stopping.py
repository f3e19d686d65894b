"""The MLP probe stops early on held-out FILES, not held-out crops of files it trains on.

Each file here is its own feature direction (a one-hot code, its crops nearly identical) and
its label is random: a probe can memorise the training files but learn nothing that carries
to a new file. Validated on unseen files, its validation accuracy stays near chance (0.5);
validated on crops of files it trained on, it climbs to ~1.0 (measured: <= 0.62 against
>= 0.97 over four seeds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from audiocpc.evaluation.classify import classify
from audiocpc.evaluation.probe import ProbeSettings, fit_probe
from audiocpc.evaluation.store import EmbeddingSplit

FILES, CROPS = 120, 5
SETTINGS = ProbeSettings(kind="mlp", hidden=32, max_epochs=30, patience=5, seed=0,
                         validation_fraction=0.5)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny matrices: one thread is faster


def _memorisable(seed: int = 0, prefix: str = "") -> tuple[np.ndarray, list[str], list[str]]:
    rng = np.random.default_rng(seed)
    file_labels = rng.permutation(np.repeat(["a", "b"], FILES // 2))
    files = [f"{prefix}f{f}.wav" for f in range(FILES) for _ in range(CROPS)]
    labels = [str(file_labels[f]) for f in range(FILES) for _ in range(CROPS)]
    features = np.repeat(np.eye(FILES, dtype=np.float32), CROPS, axis=0)
    features += rng.normal(0, 0.01, features.shape).astype(np.float32)
    return features, files, labels


def _best_validation_accuracy(history: list[dict[str, float]]) -> float:
    assert history and all("val_accuracy" in epoch for epoch in history)
    return max(epoch["val_accuracy"] for epoch in history)


def test_mlp_early_stopping_validates_on_unseen_files() -> None:
    features, files, labels = _memorisable()
    by_file = fit_probe(features, labels, SETTINGS, files=files)
    assert _best_validation_accuracy(by_file.history) < 0.8
    # the control: without file names the probe can only hold out crops, and memorises them
    by_crop = fit_probe(features, labels, SETTINGS)
    assert _best_validation_accuracy(by_crop.history) > 0.9


def test_classify_gives_the_mlp_the_files_of_its_rows(tmp_path: Path) -> None:
    embed = tmp_path / "embeddings" / "model"
    for split, seed in (("train", 0), ("test", 1)):
        features, files, labels = _memorisable(seed, prefix=f"{split}/")
        EmbeddingSplit(features, files, labels, np.zeros(len(files)), np.ones(len(files)),
                       {}).write(embed, split)
    report = classify(embed, tmp_path / "classify", probes=["mlp"], settings=SETTINGS)
    assert _best_validation_accuracy(report["probes"]["mlp"]["history"]) < 0.8
