"""A small, deterministic, labelled data set of synthetic audio for the demo and the tests.

Five classes that differ in pitch, timbre and rhythm; every file gets its own random
pitch, tempo, gain and background noise, drawn from a seed, so the same call always writes
the same files. Labels are in the file names, as in `hum.00003.wav`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

Generator = Callable[[np.random.Generator, np.ndarray, int], np.ndarray]


def _hum(rng: np.random.Generator, t: np.ndarray, sr: int) -> np.ndarray:
    """Low harmonic drone: a few decaying harmonics of 90-160 Hz."""
    f0 = rng.uniform(90, 160)
    return sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.3)) / h**1.2 for h in range(1, 7))


def _whistle(rng: np.random.Generator, t: np.ndarray, sr: int) -> np.ndarray:
    """High pure tone with slow vibrato."""
    f0, rate, depth = rng.uniform(900, 1600), rng.uniform(3, 7), rng.uniform(10, 40)
    phase = 2 * np.pi * f0 * t + depth / rate * np.sin(2 * np.pi * rate * t)
    return np.sin(phase)


def _pulse(rng: np.random.Generator, t: np.ndarray, sr: int) -> np.ndarray:
    """Rhythmic clicks of filtered noise at 3-7 beats per second."""
    period = 1.0 / rng.uniform(3, 7)
    phase = (t + rng.uniform(0, period)) % period
    envelope = np.exp(-phase / 0.012)
    noise = rng.standard_normal(t.size)
    noise = np.convolve(noise, np.ones(4) / 4, mode="same")
    return 2.5 * envelope * noise


def _chirp(rng: np.random.Generator, t: np.ndarray, sr: int) -> np.ndarray:
    """Repeating upward sweeps from ~300 Hz to ~1200 Hz."""
    period = rng.uniform(0.25, 0.5)
    lo, hi = rng.uniform(250, 400), rng.uniform(900, 1400)
    local = t % period
    freq = lo + (hi - lo) * local / period
    phase = 2 * np.pi * np.cumsum(freq) / sr
    return np.sin(phase) * np.minimum(1.0, local / 0.01)


def _buzz(rng: np.random.Generator, t: np.ndarray, sr: int) -> np.ndarray:
    """Bright sawtooth at 250-450 Hz, amplitude-modulated."""
    f0, mod = rng.uniform(250, 450), rng.uniform(1, 3)
    saw = 2 * ((f0 * t + rng.uniform()) % 1.0) - 1
    return 0.7 * saw * (0.6 + 0.4 * np.sin(2 * np.pi * mod * t))


CLASSES: dict[str, Generator] = {
    "hum": _hum, "whistle": _whistle, "pulse": _pulse, "chirp": _chirp, "buzz": _buzz,
}


def synth_clip(label: str, seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    wave = CLASSES[label](rng, t, sample_rate)
    wave = wave / (np.abs(wave).max() + 1e-9)
    snr_db = rng.uniform(10, 25)
    noise = rng.standard_normal(t.size) * 10 ** (-snr_db / 20) * np.sqrt(np.mean(wave**2))
    return (rng.uniform(0.3, 0.8) * (wave + noise) / 1.2).astype(np.float32)


def make_demo_dataset(out_dir: str | Path, files_per_class: int = 24, test_files_per_class: int = 8,
                      seconds: float = 5.0, sample_rate: int = 16000, seed: int = 0) -> Path:
    """Write `<out>/train/<label>.<i>.wav` and `<out>/test/...`; returns `out_dir`.

    Existing files with the same names are overwritten with identical content.
    """
    out = Path(out_dir)
    for split, count, split_seed in (("train", files_per_class, 0), ("test", test_files_per_class, 1)):
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        for class_index, label in enumerate(CLASSES):
            for i in range(count):
                rng = np.random.default_rng([seed, split_seed, class_index, i])
                wave = synth_clip(label, seconds, sample_rate, rng)
                sf.write(folder / f"{label}.{i:05d}.wav", wave, sample_rate, subtype="PCM_16")
    return out
