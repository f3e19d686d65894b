"""The results layout: the paths the README promises, and what `classify RUN` points at."""

from __future__ import annotations

from pathlib import Path

import pytest

from audiocpc.errors import AudiocpcError
from audiocpc.experiments.layout import ResultsLayout, locate_features, split_feature_name
from audiocpc.training.run_folder import RunFolder


def test_the_promised_paths() -> None:
    layout = ResultsLayout("results")
    assert layout.run_dir("gru") == Path("results/cpc/gru")
    assert layout.embeddings("gru") == Path("results/embeddings/gru")
    assert layout.embeddings("gru", "random") == Path("results/embeddings/gru_random")
    assert layout.classifier("gru", "mfcc") == Path("results/classifier/gru_mfcc")
    assert layout.tsne("gru") == Path("results/tsne/gru")
    assert layout.report == Path("results/report.md")
    with pytest.raises(AudiocpcError, match="choose cpc, random, mfcc"):
        layout.embeddings("gru", "wav2vec")


def test_the_trainer_and_the_layout_agree_on_run_folders() -> None:
    from audiocpc import load_config

    config = load_config("1dconv_tiny", ["output.dir=somewhere", "output.name=mine"])
    assert RunFolder.for_config(config).path == ResultsLayout("somewhere").run_dir("mine")


def test_targets_are_run_folders_embedding_folders_or_names(tmp_path: Path) -> None:
    run = tmp_path / "res" / "cpc" / "gru"
    run.mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(b"")
    target = locate_features(run)
    assert (target.layout.root, target.model, target.feature) == (tmp_path / "res", "gru", "cpc")
    baseline = tmp_path / "res" / "embeddings" / "gru_random"
    baseline.mkdir(parents=True)
    (baseline / "train.npy").write_bytes(b"")
    (baseline / "train.csv").write_bytes(b"")
    target = locate_features(baseline)  # a baseline's own folder: its features
    assert (target.model, target.feature) == ("gru", "random")
    assert target.classifier == tmp_path / "res" / "classifier" / "gru_random"
    named = locate_features("gru", "mfcc", out=tmp_path / "res")
    assert named.embeddings == tmp_path / "res" / "embeddings" / "gru_mfcc"
    assert split_feature_name("gru_mfcc") == ("gru", "mfcc") and split_feature_name("_mfcc") == ("_mfcc", "cpc")
