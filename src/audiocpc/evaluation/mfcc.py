"""The MFCC baseline: hand-made features for the very crops a CPC model embedded.

For each row of an embedding manifest (file, start_seconds, duration_seconds) the crop is
read from the decoded-audio cache, turned into MFCCs (power spectrum -> mel filterbank ->
log -> DCT) and summarised by the mean and standard deviation of each coefficient over
time; the mel filters are those of the log-mel encoder (models/logmel.py). The result is
written next to the CPC embeddings in the same format, so the same probe runs on both with
the same crops and splits.
"""

from __future__ import annotations

import csv
import json
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
from scipy.fft import dct
from tqdm.auto import tqdm

from audiocpc.data.cache import AudioCache
from audiocpc.errors import AudiocpcError


@lru_cache(maxsize=8)
def _filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    # The log-mel encoder's filterbank (Slaney mel scale), so both front ends agree.
    from audiocpc.models.logmel import mel_filterbank

    return mel_filterbank(sample_rate, n_fft, n_mels)


def mfcc(wave: np.ndarray, sample_rate: int, n_mfcc: int = 20, n_mels: int = 40,
         window_seconds: float = 0.025, hop_seconds: float = 0.010) -> np.ndarray:
    """[frames, n_mfcc] MFCCs of a mono waveform (Hann window, log mel power, DCT-II)."""
    window = max(16, int(round(window_seconds * sample_rate)))
    hop = max(1, int(round(hop_seconds * sample_rate)))
    n_fft = max(512, 1 << (window - 1).bit_length())  # zero-padded: fine bins for the mel filters
    wave = np.asarray(wave, dtype=np.float32)
    if wave.size < window:
        wave = np.pad(wave, (0, window - wave.size))
    frames = np.lib.stride_tricks.sliding_window_view(wave, window)[::hop]
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(window).astype(np.float32), n=n_fft)) ** 2
    mel = spectrum @ _filterbank(sample_rate, n_fft, n_mels).T
    return dct(np.log(mel + 1e-10), type=2, axis=1, norm="ortho")[:, :n_mfcc].astype(np.float32)


def mfcc_summary(wave: np.ndarray, sample_rate: int, n_mfcc: int = 20) -> np.ndarray:
    """[2 * n_mfcc]: mean then standard deviation of each coefficient over time."""
    coefficients = mfcc(wave, sample_rate, n_mfcc=n_mfcc)
    return np.concatenate([coefficients.mean(axis=0), coefficients.std(axis=0)])


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def crop_mfccs(rows: list[dict[str, str]], data_dir: str | Path, sample_rate: int,
               n_mfcc: int = 20, cache_dir: Optional[str] = None, progress: bool = False) -> np.ndarray:
    """MFCC summaries [rows, 2 * n_mfcc] of the crops a manifest lists."""
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    cache = AudioCache(cache_dir)
    data_dir = Path(data_dir)
    out = np.empty((len(rows), 2 * n_mfcc), dtype=np.float32)
    waves: dict[str, np.ndarray] = {}
    # Matrices this small are several times slower with BLAS threads (measured 4x on 2 cores).
    with threadpool_limits(1):
        for i, row in enumerate(tqdm(rows, desc="MFCC baseline", unit="crop", disable=not progress,
                                     leave=False, mininterval=1.0)):
            name = row["file"]
            if name not in waves:
                waves = {name: cache.load(data_dir / name, sample_rate)}  # manifests are file-ordered
            start = int(round(float(row["start_seconds"]) * sample_rate))
            length = int(round(float(row["duration_seconds"]) * sample_rate))
            out[i] = mfcc_summary(waves[name][start : start + length], sample_rate, n_mfcc)
    return out


def write_mfcc_embeddings(source_dir: str | Path, target_dir: str | Path, split: str,
                          data_dir: Optional[str | Path] = None, sample_rate: Optional[int] = None,
                          n_mfcc: int = 20, cache_dir: Optional[str] = None,
                          progress: bool = False) -> Path:
    """Write `<target>/<split>.npy/.csv/.json` with the MFCCs of the crops in
    `<source>/<split>.csv`: the same rows, in the same order, as the CPC embeddings.
    The data folder and sample rate default to those recorded in `<source>/<split>.json`."""
    source_dir, target_dir = Path(source_dir), Path(target_dir)
    info_path = source_dir / f"{split}.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    data_dir = data_dir if data_dir is not None else info.get("data_dir")
    sample_rate = sample_rate if sample_rate is not None else info.get("sample_rate")
    if data_dir is None or sample_rate is None:
        raise AudiocpcError(f"{info_path}: the data folder and sample rate of these embeddings are "
                            "unknown; embed again with `audiocpc embed`")
    rows = read_manifest(source_dir / f"{split}.csv")
    features = crop_mfccs(rows, data_dir, int(sample_rate), n_mfcc, cache_dir, progress)
    target_dir.mkdir(parents=True, exist_ok=True)
    np.save(target_dir / f"{split}.npy", features)
    (target_dir / f"{split}.csv").write_bytes((source_dir / f"{split}.csv").read_bytes())
    meta = {"features": "mfcc", "source": str(source_dir), "split": split, "data_dir": str(data_dir),
            "sample_rate": int(sample_rate), "n_mfcc": n_mfcc, "rows": int(features.shape[0]),
            "dim": int(features.shape[1]),
            "summary": "mean and standard deviation over time of each MFCC (25 ms windows, 10 ms hop, 40 mels)"}
    (target_dir / f"{split}.json").write_text(json.dumps(meta, indent=2))
    return target_dir / f"{split}.npy"
