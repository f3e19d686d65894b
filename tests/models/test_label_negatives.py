"""Label-aware negatives in training: each crop carries its file's label from the data
layer to the negative sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiocpc import load_config
from audiocpc.data.corpus import CropSampler
from audiocpc.data.labels import training_label_rule
from audiocpc.data.scan import scan_folder
from audiocpc.errors import ConfigError
from audiocpc.models import negatives as negatives_module
from audiocpc.models.cpc import CPCModel
from audiocpc.training.trainer import train

PITCH = {"low": 200.0, "high": 1500.0}


@pytest.fixture
def two_speakers(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 8000
    for label, f0 in PITCH.items():
        (tmp_path / label).mkdir()
        for i in range(4):
            wave = 0.5 * np.sin(2 * np.pi * f0 * (1 + 0.02 * i) * t) + 0.01 * rng.standard_normal(t.size)
            sf.write(tmp_path / label / f"clip{i}.wav", wave.astype(np.float32), 8000)
    return tmp_path


def _dominant_hz(crop: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(crop))
    return float(np.fft.rfftfreq(crop.size, 1 / 8000)[spectrum.argmax()])


def test_crops_carry_their_files_labels(two_speakers: Path) -> None:
    cfg = load_config("cpc_tiny", ["data.labels=folder"])
    corpus = scan_folder(two_speakers, cfg.data, progress=False).corpus(labels=training_label_rule(cfg.data))
    assert corpus.classes == ["high", "low"]
    sampler = CropSampler(corpus, cfg.data.crop_samples, 6, seed=0)
    for step in range(5):
        crops, labels = sampler.batch_with_labels(step)
        for crop, label in zip(crops, labels):
            expected = PITCH[corpus.classes[label]]
            assert abs(_dominant_hz(crop) - expected) < 0.1 * expected


def test_training_with_other_label_negatives_draws_only_from_the_other_label(
        two_speakers: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config("cpc_tiny", [f"output.dir={tmp_path / 'out'}", "data.labels=folder",
                                   "loss.negatives.policy=other_label", "loss.negatives.count=8",
                                   "train.epochs=1", "train.steps_per_epoch=4"])
    seen: list[tuple[np.ndarray, np.ndarray]] = []       # (crops, labels) the model got
    drawn: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]] = []  # (targets, negatives, labels, L)
    forward, sample = CPCModel.forward, negatives_module.sample_negatives

    def spy_forward(self, waves, labels=None, **kwargs):  # type: ignore[no-untyped-def]
        seen.append((waves.detach().numpy().copy(), labels.numpy().copy()))
        return forward(self, waves, labels, **kwargs)

    def spy_sample(policy, targets, batch, length, count, labels=None, allow_positive=False):  # type: ignore[no-untyped-def]
        out = sample(policy, targets, batch, length, count, labels, allow_positive)
        drawn.append((targets.numpy(), out.numpy(), labels.numpy(), length))
        return out

    monkeypatch.setattr(CPCModel, "forward", spy_forward)
    monkeypatch.setattr(negatives_module, "sample_negatives", spy_sample)
    result = train(cfg, two_speakers, progress=False)
    assert result.steps == 4 and all(np.isfinite(result.step_losses))
    classes = ["high", "low"]
    assert len(seen) == 4 and len(drawn) == 4
    for crops, labels in seen:  # every crop reached the model with its own file's label
        for crop, label in zip(crops, labels):
            expected = PITCH[classes[label]]
            assert abs(_dominant_hz(crop) - expected) < 0.1 * expected
    assert any(len(set(labels.tolist())) == 2 for _, labels in seen)
    for targets, negatives, labels, length in drawn:  # no negative shares its positive's label
        positive_label = labels[targets // length]
        assert (labels[negatives // length] != positive_label[..., None]).all()


def test_label_policy_without_labels_is_refused_at_load() -> None:
    with pytest.raises(ConfigError, match="set data.labels"):
        load_config("cpc_tiny", ["loss.negatives.policy=same_label", "loss.negatives.count=4"])


def test_one_label_in_the_training_files_is_refused_in_one_line(two_speakers: Path, tmp_path: Path) -> None:
    import shutil

    shutil.rmtree(two_speakers / "high")  # every file left is 'low'
    cfg = load_config("cpc_tiny", [f"output.dir={tmp_path / 'out'}", "data.labels=folder",
                                   "loss.negatives.policy=other_label", "loss.negatives.count=8",
                                   "train.epochs=1", "train.steps_per_epoch=2"])
    with pytest.raises(ConfigError, match="needs at least 2 labels among the training files, found 1"):
        train(cfg, two_speakers, progress=False)
