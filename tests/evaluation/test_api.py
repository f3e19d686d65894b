"""The Python API: audiocpc.load, embedding arrays and files, the scikit-learn transformer."""

from __future__ import annotations

import csv
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import audiocpc
from audiocpc.training.checkpoint import load_checkpoint
from audiocpc.cli import main
from audiocpc.errors import AudiocpcError, CheckpointError
from audiocpc.training.device import resolve_device

T = 12  # 1dconv_tiny: context steps per crop, windows of 500 samples at 8 kHz


def test_load_rebuilds_the_model_from_the_checkpoint_alone(tiny_run: Path, tmp_path: Path) -> None:
    alone = tmp_path / "copied"
    alone.mkdir()
    shutil.copy(tiny_run / "checkpoint.pt", alone / "checkpoint.pt")  # no config.yaml beside it
    model = audiocpc.load(alone)
    assert isinstance(model, audiocpc.CPCEmbedder)
    assert not model.model.training and model.device == resolve_device("auto")
    assert next(model.model.parameters()).device.type == model.device.type
    assert model.sample_rate == 8000 and model.crop_samples == T * 500
    stored = load_checkpoint(tiny_run)["model"]
    assert all(torch.equal(stored[k], v.cpu()) for k, v in model.model.state_dict().items())
    with pytest.raises(CheckpointError, match="no trained model in"):
        audiocpc.load(tmp_path / "missing")
    (tmp_path / "linked").symlink_to(tiny_run)  # a linked run folder keeps the link's name
    assert audiocpc.load(tmp_path / "linked").run.name == "linked"


def _stereo(seconds: float, sample_rate: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    left = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
    right = 0.3 * np.sin(2 * np.pi * 660 * t + 1.0) + 0.05 * rng.standard_normal(t.size)
    return np.stack([left, right], axis=1).astype(np.float32)  # [samples, channels]


def test_a_stereo_array_embeds_like_the_file_through_the_cli(tiny_run: Path, tmp_path: Path) -> None:
    stereo = _stereo(1.2, 22050)  # 9600 samples at 8 kHz: exactly one whole crop, at 0
    data = tmp_path / "data"
    data.mkdir()
    sf.write(data / "clip.wav", stereo, 22050, subtype="FLOAT")
    assert main(["embed", str(tiny_run), "--data", str(data), "--split", "test", "--crops", "all",
                 "--out", str(tmp_path), "--quiet"]) == 0
    folder = tmp_path / "embeddings" / "tiny"
    row = np.load(folder / "test.npy")
    assert row.shape == (1, 64)
    assert (folder / "test.csv").read_text().splitlines()[1].startswith("0,clip.wav,0.000000,0.750000,")

    model = audiocpc.load(tiny_run)
    features = model.embed(stereo, 22050)
    assert features.c.shape == (1, 9600 // 500, 64) and features.z.shape == (1, 19, 64)
    assert features.lengths.tolist() == [19]
    np.testing.assert_allclose(features.c[0, T - 1].numpy(), row[0], atol=1e-5)
    # the same samples as a channels-first torch tensor
    first = model.embed(torch.from_numpy(stereo.T.copy()), 22050, channels_first=True)
    np.testing.assert_allclose(first.c.numpy(), features.c.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="channels_first=True"):
        model.embed(stereo.T, 22050)
    # pooled file-level embeddings reuse the same crops
    np.testing.assert_allclose(model.embed_files([data / "clip.wav"], crops="all"), row, atol=1e-5)
    z_mean = model.embed_files([data / "clip.wav"], crops="all", kind="z_mean")
    np.testing.assert_allclose(z_mean[0], features.z[0, :T].mean(0).numpy(), atol=1e-5)


def test_a_batch_of_different_lengths_keeps_each_item_intact(tiny_run: Path) -> None:
    model = audiocpc.load(tiny_run)
    rng = np.random.default_rng(0)
    short, long = (rng.standard_normal(n).astype(np.float32) * 0.3 for n in (3000, 8200))
    batch = model.embed([short, long], 8000)
    assert batch.lengths.tolist() == [6, 16] and batch.c.shape == (2, 16, 64)
    alone = model.embed(short, 8000)
    np.testing.assert_allclose(batch.c[0, :6].numpy(), alone.c[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(batch.z[0, :6].numpy(), alone.z[0].numpy(), atol=1e-5)


def test_inputs_shorter_than_a_crop_are_named(tiny_run: Path) -> None:
    model = audiocpc.load(tiny_run)
    with pytest.raises(AudiocpcError, match="1 input\\(s\\) shorter than one crop \\(0.750 s"):
        model.embed_waveforms([np.zeros(7000, np.float32), np.zeros(5000, np.float32)], 8000,
                              on_short="error")


def test_inputs_shorter_than_a_crop_are_padded_with_a_warning(tiny_run: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    # The API raised where `audiocpc embed` skips: now one row per input comes back, said aloud.
    model = audiocpc.load(tiny_run)
    rng = np.random.default_rng(0)
    short = (0.3 * rng.standard_normal(5000)).astype(np.float32)
    with caplog.at_level("WARNING", logger="audiocpc"):
        rows = model.embed_waveforms([np.zeros(7000, np.float32), short], 8000)
    assert rows.shape == (2, 64) and np.isfinite(rows).all()
    assert any("1 input(s) shorter than one crop" in r.getMessage() and "padded" in r.getMessage()
               for r in caplog.records)
    # the recording is standardised as a whole (data.standardize), then padded with silence:
    # the reference is given standardised and padded, and embedded without standardising again
    from audiocpc.data.audio import standardize

    assert model.config.data.standardize
    padded = np.pad(standardize(short), (0, 6000 - 5000))
    model.config.data.standardize = False
    np.testing.assert_allclose(rows[1], model.embed_waveforms([padded], 8000)[0], atol=1e-5)


def _demo_waves(folder: Path) -> tuple[list[Path], list[np.ndarray], list[str]]:
    paths = sorted(folder.glob("*.wav"))
    waves = [sf.read(str(p), dtype="float32")[0] for p in paths]
    return paths, waves, [p.name.split(".")[0] for p in paths]


def test_cpc_transformer_in_a_scikit_learn_pipeline(tiny_run: Path, demo_dir: Path, tmp_path: Path) -> None:
    _, train_waves, train_labels = _demo_waves(demo_dir / "train")
    paths, waves, labels = _demo_waves(demo_dir / "test")
    transformer = audiocpc.CPCTransformer(tiny_run, sample_rate=16000, crops=2)
    pipeline = make_pipeline(transformer, StandardScaler(), LogisticRegression(max_iter=1000))
    pipeline.fit(train_waves, train_labels)
    assert pipeline.predict(waves).shape == (len(waves),)
    assert pipeline.score(waves, labels) >= 0.35  # held-out files, 5 balanced classes: chance is 0.2
    assert pipeline.get_params()["cpctransformer__kind"] == "context"

    features = transformer.transform(waves)
    assert features.shape == (len(waves), 64) and features.dtype == np.float32
    # file paths: each row is the mean of the rows `audiocpc embed` writes for that file's crops
    # (an independent path: the CLI reads the folder through the scan and the decoded-audio cache)
    assert main(["embed", str(tiny_run), "--data", str(demo_dir / "test"), "--split", "test",
                 "--crops", "2", "--out", str(tmp_path), "--quiet"]) == 0
    rows = np.load(tmp_path / "embeddings" / "tiny" / "test.npy")
    with open(tmp_path / "embeddings" / "tiny" / "test.csv", newline="") as handle:
        row_files = [r["file"] for r in csv.DictReader(handle)]
    by_cli = np.stack([rows[[f == p.name for f in row_files]].mean(axis=0) for p in paths])
    assert all(row_files.count(p.name) == 2 for p in paths)
    np.testing.assert_allclose(transformer.transform(paths), by_cli, atol=1e-5)
    # waveforms go through the same model: the same file's two crops differ from its row only
    # by where they are cut (keyed by position, not name), so each row is nearest its own file
    distances = np.linalg.norm(features[:, None] - by_cli[None], axis=-1)
    assert (distances.argmin(axis=1) == np.arange(len(paths))).mean() > 0.5

    copy = clone(transformer).set_params(kind="z_mean")
    assert copy.get_params()["kind"] == "z_mean" and transformer.kind == "context"
    restored = pickle.loads(pickle.dumps(transformer))  # without the loaded model inside
    assert "_loaded" not in restored.__dict__
    np.testing.assert_allclose(restored.transform(waves[:2]), features[:2], atol=1e-6)
