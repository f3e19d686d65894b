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
from audiocpc.evaluation.probe import ProbeSettings, fit_probe, split_by_file
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


def test_the_mlp_stops_patience_epochs_after_its_best_and_keeps_the_best_epoch() -> None:
    # random labels per file: validated on unseen files, the loss bottoms out early, then rises
    features, files, labels = _memorisable()
    settings = ProbeSettings(kind="mlp", hidden=16, lr=0.02, max_epochs=200, patience=4, seed=0,
                             validation_fraction=0.5, standardize=False)
    fitted = fit_probe(features, labels, settings, files=files)
    losses = [epoch["val_loss"] for epoch in fitted.history]
    best = int(np.argmin(losses))
    assert len(losses) < settings.max_epochs             # it did stop early
    assert len(losses) == best + 1 + settings.patience   # exactly `patience` epochs past the best
    # the model kept is the best epoch's: its loss on the held-out files is the best loss
    classes = sorted(set(labels))
    held = split_by_file(files, [str(classes.index(label)) for label in labels], 0.5, seed=0)
    proba = fitted.predict_proba(features[held])
    y = np.array([classes.index(label) for label, h in zip(labels, held) if h])
    kept_loss = float(-np.log(proba[np.arange(len(y)), y]).mean())
    assert kept_loss == pytest.approx(losses[best], rel=1e-4)
    assert kept_loss < losses[-1]
