"""Shared fixtures: generated audio only (no audio files live in the repo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test session decodes into its own cache, never the user's ~/.cache."""
    monkeypatch.setenv("AUDIOCPC_CACHE", str(tmp_path_factory.getbasetemp() / "audio-cache"))
    torch.set_num_threads(2)


def write_tone_dataset(folder: Path, files: int = 24, seconds: float = 2.0, sample_rate: int = 8000,
                       seed: int = 0) -> Path:
    """Files whose future is predictable from their past: each one a tone at its own pitch
    (log-spaced 150-2500 Hz, shuffled), with a little noise."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pitches = np.geomspace(150, 2500, files)
    rng.shuffle(pitches)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    for i, f0 in enumerate(pitches):
        wave = 0.5 * np.sin(2 * np.pi * f0 * t + rng.uniform(0, 6.28))
        wave += 0.02 * rng.standard_normal(t.size)
        sf.write(folder / f"tone{i:03d}.wav", wave.astype(np.float32), sample_rate)
    return folder


@pytest.fixture(scope="session")
def tone_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tone_dataset(tmp_path_factory.mktemp("tones"))


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from audiocpc.data.synthetic import make_demo_dataset

    # the timbre classes: separable by spectra alone, a quick check that a model learns at all
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), files_per_class=8,
                             test_files_per_class=4, seconds=3.0, classes="timbre")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> Path:
    """The run folder of a 1dconv_tiny model trained for 30 steps on the demo data, shared
    by the tests that need a trained model (embeddings, Python API)."""
    from audiocpc.config import load_config
    from audiocpc.training.trainer import train

    out = tmp_path_factory.mktemp("tiny-run")
    config = load_config("1dconv_tiny", [f"output.dir={out}", "output.name=tiny", "data.N=8",
                                         "train.epochs=1", "train.steps_per_epoch=30"])
    with pytest.MonkeyPatch.context() as patch:  # session scope: the autouse cache fixture is not active
        patch.setenv("AUDIOCPC_CACHE", str(tmp_path_factory.getbasetemp() / "audio-cache"))
        return train(config, demo_dir / "train", progress=False).run_dir


@pytest.fixture
def fsdd_dir() -> Path:
    if not FSDD.is_dir():
        pytest.skip(f"FSDD not found at {FSDD}")
    return FSDD
