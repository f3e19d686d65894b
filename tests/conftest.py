"""Shared fixtures: generated audio only (no audio files live in the repo)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import soundfile as sf
import torch

# beside the repository (../shared/data/fsdd); AUDIOCPC_FSDD points elsewhere (e.g. from a worktree)
FSDD = Path(os.environ.get("AUDIOCPC_FSDD") or
            Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd")


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
    from audiocpc import load_config
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


@pytest.fixture(scope="session")
def tiny_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An exported folder (config.json + model.safetensors) of every tiny preset, seeded weights."""
    from audiocpc.training.exported import write_safetensors
    from tiny_models import BUILTIN_PRESETS, TINY_PRESETS, build_model, tiny_config

    missing = sorted(set(BUILTIN_PRESETS) - set(TINY_PRESETS))
    assert not missing, f"add a tiny version of the new preset(s) {missing} to TINY_PRESETS"
    root = tmp_path_factory.mktemp("tiny-exports")
    folders = {}
    for name in TINY_PRESETS:
        config = tiny_config(name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_model(config).eval()
        write_safetensors(model, config, root / name, name)
        folders[name] = root / name
    return folders


@pytest.fixture(scope="session")
def hear_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny HEAR-format task written by the project's own code: the synthetic five-class
    clips (data/synthetic.py), 6 per class, 1 s each, as 3 folds at 16 kHz (make-task)."""
    from audiocpc.data.synthetic import make_demo_dataset
    from audiocpc.evaluation.tasks import make_task

    root = tmp_path_factory.mktemp("hear-task")
    data = make_demo_dataset(root / "clips", files_per_class=6, test_files_per_class=0, seconds=1.0,
                             classes="timbre")  # five classes that differ in spectrum
    make_task(data / "train", root / "synthetic", folds=3, name="synthetic")
    return root / "synthetic"


@pytest.fixture
def decoded_files(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files the cache decodes during the test, in order (decodes counted,
    not cache requests)."""
    from audiocpc.data import cache as cache_module

    decoded: list[str] = []
    real = cache_module.read_audio_with_facts

    def counting(path, sample_rate):  # type: ignore[no-untyped-def]
        decoded.append(Path(path).name)
        return real(path, sample_rate)

    monkeypatch.setattr(cache_module, "read_audio_with_facts", counting)
    return decoded


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny matrices: one torch thread is several times faster than two on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
