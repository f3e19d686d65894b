"""Batches loaded by data.num_workers background processes: each step's batch arrives once,
in step order, and equals the batch that loading in the main process (num_workers=0) gives."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import numpy as np
import pytest
import soundfile as sf
import torch

from audiocpc import load_config
from audiocpc.data import corpus as corpus_module
from audiocpc.data.corpus import AudioCorpus, CropSampler, _StepStream, batch_stream
from audiocpc.data.scan import scan_folder
from audiocpc.training.trainer import train

RATE = 8000
Batch = tuple[int, torch.Tensor, Optional[torch.Tensor]]


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    """Six labelled files (the label is the word before the underscore), 2 s of noise each."""
    folder = tmp_path / "audio"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        name = f"{'cat' if i % 2 else 'dog'}_{i}.wav"
        sf.write(folder / name, (0.2 * rng.standard_normal(2 * RATE)).astype(np.float32), RATE)
    return folder


def _corpus(folder: Path, tmp_path: Path) -> AudioCorpus:
    data = load_config("1dconv_tiny", [f"data.cache_dir={tmp_path / 'cache'}"]).data
    from audiocpc.data.labels import label_rule

    return scan_folder(folder, data, progress=False).corpus(labels=label_rule("auto"))


def _sampler(folder: Path, tmp_path: Path) -> CropSampler:
    return CropSampler(_corpus(folder, tmp_path), crop_samples=RATE, batch_size=3, seed=5)


def _same(a: list[Batch], b: list[Batch]) -> None:
    assert [step for step, _, _ in a] == [step for step, _, _ in b]
    for (step, crops_a, labels_a), (_, crops_b, labels_b) in zip(a, b):
        assert torch.equal(crops_a, crops_b), f"step {step}: other crops"
        assert labels_a is not None and labels_b is not None and torch.equal(labels_a, labels_b)


def test_each_worker_takes_its_own_steps(labelled: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The split of the steps between workers, seen from inside each worker."""
    sampler = _sampler(labelled, tmp_path)
    stream = _StepStream(sampler, 2, 9)
    per_worker: list[list[Batch]] = []
    for worker in range(2):
        info: Any = SimpleNamespace(id=worker, num_workers=2)
        monkeypatch.setattr(corpus_module, "get_worker_info", lambda info=info: info)
        per_worker.append(list(stream))
    steps = sorted(step for batches in per_worker for step, _, _ in batches)
    assert steps == list(range(2, 9)), "a step is missing or loaded by two workers"
    for batches in per_worker:
        for step, crops, labels in batches:
            expected, expected_labels = sampler.batch_with_labels(step)
            assert np.array_equal(crops.numpy(), expected)
            assert labels is not None and np.array_equal(labels.numpy(), expected_labels)


@pytest.mark.slow  # starts worker processes
def test_two_workers_yield_every_step_once_as_the_main_process_does(labelled: Path,
                                                                    tmp_path: Path) -> None:
    sampler = _sampler(labelled, tmp_path)
    in_process = list(batch_stream(sampler, 3, 11, num_workers=0))
    with_workers = list(batch_stream(sampler, 3, 11, num_workers=2))
    assert [step for step, _, _ in with_workers] == list(range(3, 11))
    _same(with_workers, in_process)
    assert len({tuple(crops.flatten()[:50].tolist()) for _, crops, _ in in_process}) == 8  # steps differ


@pytest.mark.slow  # starts worker processes and trains
def test_training_with_workers_sees_the_same_batches(labelled: Path, tmp_path: Path) -> None:
    common = ["model.z_dim=16", "model.c_dim=16", "model.encoder.filters=8", "data.N=3",
              "train.epochs=1", "train.steps_per_epoch=3", "train.validation_fraction=0",
              "train.device=cpu", "data.labels=auto", "loss.negatives.policy=same_label",
              "loss.negatives.count=4"]
    results = [train(load_config("1dconv_tiny", [f"output.dir={tmp_path / str(workers)}",
                                                 f"data.num_workers={workers}", *common]),
                     labelled, progress=False) for workers in (0, 2)]
    assert results[0].steps == results[1].steps == 3
    assert results[0].step_losses == results[1].step_losses
