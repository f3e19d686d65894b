"""Audio pipeline: real sample rates are read and resampled, channels are averaged, short
files are skipped with one warning, and crops are seeded."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiocpc.data.audio import discover_audio_files, read_audio
from audiocpc import load_config
from audiocpc.data.corpus import CropSampler
from audiocpc.data.scan import scan_folder
from audiocpc.errors import ConfigError


def _tone(seconds: float, sr: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    left = _tone(3.0, 44100)
    sf.write(tmp_path / "stereo44k.wav", np.stack([left, np.zeros_like(left)], axis=1), 44100)
    sub = tmp_path / "nested"
    sub.mkdir()
    sf.write(sub / "mono8k.flac", _tone(2.5, 8000), 8000)
    sf.write(tmp_path / "short.wav", _tone(0.3, 16000), 16000)
    (tmp_path / "notes.txt").write_text("not audio")
    return tmp_path


def test_discovery_is_recursive_sorted_and_filtered(mixed_folder: Path) -> None:
    found = [p.relative_to(mixed_folder).as_posix()
             for p in discover_audio_files(mixed_folder, ["wav", "flac"])]
    assert found == ["nested/mono8k.flac", "short.wav", "stereo44k.wav"]


def test_stereo_is_averaged_and_resampled(mixed_folder: Path) -> None:
    wave = read_audio(mixed_folder / "stereo44k.wav", 8000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(wave.size - 3.0 * 8000) <= 2
    # left channel a 0.5-amplitude tone, right channel silent: the average peaks at 0.25
    assert np.abs(wave[1000:-1000]).max() == pytest.approx(0.25, abs=0.01)
    # the 440 Hz tone survives resampling at the right frequency
    spectrum = np.abs(np.fft.rfft(wave))
    assert np.fft.rfftfreq(wave.size, 1 / 8000)[spectrum.argmax()] == pytest.approx(440, abs=2)


def test_corpus_resamples_every_rate_and_skips_short_files(
        mixed_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = load_config("1dconv_tiny", ["data.extensions=[wav, flac]"])  # 1 s crops at 8 kHz
    with caplog.at_level(logging.WARNING, logger="audiocpc"):
        corpus = scan_folder(mixed_folder, cfg.data, progress=False).corpus()
    names = sorted(p.name for p in corpus.paths)
    assert names == ["mono8k.flac", "stereo44k.wav"]
    lengths = dict(zip((p.name for p in corpus.paths), corpus.lengths.tolist()))
    assert lengths["mono8k.flac"] == 20000
    assert abs(lengths["stereo44k.wav"] - 24000) <= 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 1 file(s) shorter than 1.000 s" in warnings[0]
    assert "short.wav" in warnings[0]


def test_no_usable_file_is_a_clear_error(mixed_folder: Path) -> None:
    cfg = load_config("1dconv_tiny", ["data.full_duration=10.0"])
    report = scan_folder(mixed_folder, cfg.data, progress=False)
    with pytest.raises(ConfigError, match="the longest, stereo44k.wav, has 3.000 s") as checked:
        report.check()
    with pytest.raises(ConfigError) as made:  # the corpus says it with the same one message
        report.corpus()
    assert str(made.value) == str(checked.value) and "\n" not in str(checked.value)


def test_missing_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data folder not found"):
        discover_audio_files(tmp_path / "nope", ["wav"])


def test_crops_are_seeded_per_step_and_rank(tone_dir: Path) -> None:
    cfg = load_config("1dconv_tiny")
    corpus = scan_folder(tone_dir, cfg.data, progress=False).corpus()
    sampler = CropSampler(corpus, cfg.data.crop_samples, 4, seed=3)
    first, again = sampler.batch(7), sampler.batch(7)
    assert first.shape == (4, cfg.data.crop_samples) and np.array_equal(first, again)
    assert not np.array_equal(first, sampler.batch(8))
    assert not np.array_equal(first, CropSampler(corpus, cfg.data.crop_samples, 4, 3, rank=1).batch(7))
    # each crop is a real slice of one file
    row = first[0]
    assert any(_contains(corpus.recording(i)[:], row) for i in range(len(corpus)))


def _contains(wave: np.ndarray, crop: np.ndarray) -> bool:
    hits = np.flatnonzero(wave[: wave.size - crop.size + 1] == crop[0])
    return any(np.array_equal(wave[h : h + crop.size], crop) for h in hits)
