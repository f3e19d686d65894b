"""Small, deterministic, labelled data sets of synthetic audio for the demo and the tests.

`temporal` (the demo's): four classes in two pairs, each pair the same sounds in the
opposite temporal order, so that statistics of short frames (MFCC mean and standard
deviation, which ignore frame order and are unchanged by time reversal) cannot tell the
two classes of a pair apart, while a model of how the sound evolves can:

- `rising` / `falling`: arpeggios of 3-5 notes (a random chord per file, smooth symmetric
  note envelopes) played upwards, or the same clip reversed (downwards);
- `pluck` / `swell`: notes in random order, struck and decaying, or the same clip reversed
  (growing, then cut off).

`timbre` (the tests'): five classes that differ in pitch, timbre and rhythm (hum, whistle,
pulse, chirp, buzz), separable by spectrum statistics alone.

Every file gets its own random notes, tempo, gain and background noise, drawn from a seed,
so the same call always writes the same files. Labels are in the file names
(`rising.00003.wav`; `0rising00003.wav` in the tutorial layout).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import soundfile as sf

from audiocpc.fileio import atomic_write_bytes

Generator = Callable[[np.random.Generator, np.ndarray, int], np.ndarray]


def _hum(rng: np.random.Generator, t: np.ndarray, sample_rate: int) -> np.ndarray:
    """Low harmonic drone: a few decaying harmonics of 90-160 Hz."""
    f0 = rng.uniform(90, 160)
    return sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.3)) / h**1.2 for h in range(1, 7))


def _whistle(rng: np.random.Generator, t: np.ndarray, sample_rate: int) -> np.ndarray:
    """High pure tone with slow vibrato."""
    f0, rate, depth = rng.uniform(900, 1600), rng.uniform(3, 7), rng.uniform(10, 40)
    phase = 2 * np.pi * f0 * t + depth / rate * np.sin(2 * np.pi * rate * t)
    return np.sin(phase)


def _pulse(rng: np.random.Generator, t: np.ndarray, sample_rate: int) -> np.ndarray:
    """Rhythmic clicks of filtered noise at 3-7 beats per second."""
    period = 1.0 / rng.uniform(3, 7)
    phase = (t + rng.uniform(0, period)) % period
    envelope = np.exp(-phase / 0.012)
    noise = rng.standard_normal(t.size)
    noise = np.convolve(noise, np.ones(4) / 4, mode="same")
    return 2.5 * envelope * noise


def _chirp(rng: np.random.Generator, t: np.ndarray, sample_rate: int) -> np.ndarray:
    """Repeating upward sweeps from ~300 Hz to ~1200 Hz."""
    period = rng.uniform(0.25, 0.5)
    lo, hi = rng.uniform(250, 400), rng.uniform(900, 1400)
    local = t % period
    freq = lo + (hi - lo) * local / period
    phase = 2 * np.pi * np.cumsum(freq) / sample_rate
    return np.sin(phase) * np.minimum(1.0, local / 0.01)


def _buzz(rng: np.random.Generator, t: np.ndarray, sample_rate: int) -> np.ndarray:
    """Bright sawtooth at 250-450 Hz, amplitude-modulated."""
    f0, mod = rng.uniform(250, 450), rng.uniform(1, 3)
    saw = 2 * ((f0 * t + rng.uniform()) % 1.0) - 1
    return 0.7 * saw * (0.6 + 0.4 * np.sin(2 * np.pi * mod * t))


TIMBRE_CLASSES: dict[str, Generator] = {
    "hum": _hum, "whistle": _whistle, "pulse": _pulse, "chirp": _chirp, "buzz": _buzz,
}


def _tone(freq: float, n: int, sample_rate: int, rng: np.random.Generator, brightness: float) -> np.ndarray:
    """A few harmonics of `freq` (no aliasing above the Nyquist rate)."""
    t = np.arange(n) / sample_rate
    harmonics = [h for h in range(1, 6) if h * freq < 0.45 * sample_rate]
    # start from zeros (0.0 + x == x exactly), so the sum is an array even with no harmonics
    return sum((np.sin(2 * np.pi * freq * h * t + rng.uniform(0, 6.3)) * brightness ** (h - 1)
                for h in harmonics), np.zeros(n))


def _chord(rng: np.random.Generator) -> np.ndarray:
    """3-5 distinct pitches: a random root (180-420 Hz) and random steps of 2-5 semitones."""
    steps = np.cumsum(rng.integers(2, 6, size=int(rng.integers(3, 6)) - 1))
    return rng.uniform(180, 420) * 2.0 ** (np.concatenate([[0], steps]) / 12)


def _arpeggio(rng: np.random.Generator, t: np.ndarray, sample_rate: int) -> np.ndarray:
    """The chord's notes from low to high, again and again; each note a smooth (Hann) bump,
    so a note reversed in time is the same note."""
    notes, note = _chord(rng), int(rng.uniform(0.11, 0.17) * sample_rate)
    brightness = rng.uniform(0.3, 0.7)
    envelope = np.hanning(note)
    out = np.zeros(t.size)
    for i, start in enumerate(range(0, t.size, note)):
        n = min(note, t.size - start)
        out[start : start + n] = (_tone(notes[i % len(notes)], note, sample_rate, rng, brightness) * envelope)[:n]
    return out


def _plucks(rng: np.random.Generator, t: np.ndarray, sample_rate: int) -> np.ndarray:
    """The chord's notes in random order, each struck (5 ms attack) and decaying."""
    notes, note = _chord(rng), int(rng.uniform(0.14, 0.22) * sample_rate)
    brightness, decay = rng.uniform(0.3, 0.7), rng.uniform(0.03, 0.06)
    local = np.arange(note) / sample_rate
    envelope = np.minimum(1.0, local / 0.005) * np.exp(-local / decay)
    out = np.zeros(t.size)
    for start in range(0, t.size, note):
        n = min(note, t.size - start)
        out[start : start + n] = (_tone(rng.choice(notes), note, sample_rate, rng, brightness) * envelope)[:n]
    return out


def _reversed(generator: Generator) -> Generator:
    def reverse(rng: np.random.Generator, t: np.ndarray, sample_rate: int) -> np.ndarray:
        return generator(rng, t, sample_rate)[::-1].copy()

    reverse.__doc__ = f"{generator.__name__} played backwards"
    return reverse


TEMPORAL_CLASSES: dict[str, Generator] = {
    "rising": _arpeggio, "falling": _reversed(_arpeggio),
    "pluck": _plucks, "swell": _reversed(_plucks),
}

CLASS_SETS: dict[str, dict[str, Generator]] = {"temporal": TEMPORAL_CLASSES, "timbre": TIMBRE_CLASSES}
CLASSES = TEMPORAL_CLASSES  # the demo's


def synth_clip(label: str, seconds: float, sample_rate: int, rng: np.random.Generator,
               classes: Optional[str] = None) -> np.ndarray:
    """One noisy clip of class `label`; `classes` names its set (default: the set that has
    this label, so that timbre labels such as 'hum' keep working without naming it)."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    if classes is None:
        classes = next((name for name, members in CLASS_SETS.items() if label in members), "temporal")
    wave = CLASS_SETS[classes][label](rng, t, sample_rate)
    wave = wave / (np.abs(wave).max() + 1e-9)
    snr_db = rng.uniform(10, 25)
    noise = rng.standard_normal(t.size) * 10 ** (-snr_db / 20) * np.sqrt(np.mean(wave**2))
    return (rng.uniform(0.3, 0.8) * (wave + noise) / 1.2).astype(np.float32)


LAYOUTS = ("plain", "tutorial")


def make_demo_dataset(out_dir: str | Path, files_per_class: int = 24, test_files_per_class: int = 8,
                      seconds: float = 5.0, sample_rate: int = 16000, seed: int = 0,
                      classes: str = "temporal", layout: str = "plain",
                      cpc_files_per_class: Optional[int] = None) -> Path:
    """Write `<out>/train/<label>.<i>.wav` and `<out>/test/...`; returns `out_dir`.

    `layout="tutorial"` writes a folder laid out as the TensorFlow CPC framework's tutorial
    asks: `custom_audio_dataset/` (audio to train CPC on), `train/` and `test/` (audio to
    embed and classify), labels in the names as in `7seven00032.wav` (`0rising00003.wav`),
    all at one known rate (give sample_rate=22050, the tutorial's original_sr).
    Existing files with the same content are left untouched (their times too).
    """
    if classes not in CLASS_SETS:
        raise ValueError(f"classes: choose {', '.join(CLASS_SETS)}, got {classes!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout: choose {', '.join(LAYOUTS)}, got {layout!r}")
    out = Path(out_dir)
    splits = [("train", files_per_class, 0), ("test", test_files_per_class, 1)]
    if layout == "tutorial":
        splits.insert(0, ("custom_audio_dataset", cpc_files_per_class or files_per_class, 2))
    for split, count, split_seed in splits:
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        for class_index, label in enumerate(CLASS_SETS[classes]):
            for i in range(count):
                rng = np.random.default_rng([seed, split_seed, class_index, i])
                wave = synth_clip(label, seconds, sample_rate, rng, classes)
                name = (f"{class_index}{label}{i:05d}.wav" if layout == "tutorial"
                        else f"{label}.{i:05d}.wav")
                _write_if_changed(folder / name, wave, sample_rate)
    return out


def _write_if_changed(path: Path, wave: np.ndarray, sample_rate: int) -> None:
    """Leave a file that already holds these samples untouched: a rewrite would change its
    modification time, and every stage keyed by the audio (embed, MFCC) would run again."""
    buffer = io.BytesIO()
    sf.write(buffer, wave, sample_rate, subtype="PCM_16", format="WAV")
    data = buffer.getvalue()
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return
    except OSError:  # absent or unreadable: write it
        pass
    atomic_write_bytes(path, data)
