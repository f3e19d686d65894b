"""The MFCC baseline: hand-made features for the very crops a CPC model embedded.

For each row of an embedding manifest (file, start_seconds, duration_seconds) the crop is
read from the decoded-audio cache, turned into MFCCs (power spectrum -> mel filterbank ->
log -> DCT) and summarised by the mean and standard deviation of each coefficient over
time; the mel filters are those of the log-mel encoder (models/logmel.py). The result is
written next to the CPC embeddings in the same format, so the same probe runs on both with
the same crops and splits.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import numpy as np
from scipy.fft import dct
from tqdm.auto import tqdm

from audiocpc.data.cache import AudioCache
from audiocpc.errors import AudiocpcError
from audiocpc.evaluation.store import EmbeddingSplit
from audiocpc.fileio import files_fingerprint, normalised_json, sha256_file


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


def crop_mfccs(crops: EmbeddingSplit, data_dir: str | Path, sample_rate: int,
               n_mfcc: int = 20, cache_dir: Optional[str] = None,
               progress: bool = False) -> np.ndarray:
    """MFCC summaries [rows, 2 * n_mfcc] of the crops an embedding split lists."""
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    cache = AudioCache(cache_dir)
    data_dir = Path(data_dir)
    out = np.empty((len(crops), 2 * n_mfcc), dtype=np.float32)
    waves: dict[str, np.ndarray] = {}
    # Matrices this small are several times slower with BLAS threads (measured 4x on 2 cores).
    with threadpool_limits(1):
        rows = zip(crops.files, crops.start_seconds, crops.duration_seconds)
        for i, (name, start_s, duration_s) in enumerate(tqdm(rows, total=len(crops), desc="MFCC baseline",
                                                             unit="crop", disable=not progress,
                                                             leave=False, mininterval=1.0)):
            if name not in waves:
                waves = {name: cache.load(data_dir / name, sample_rate)}  # manifests are file-ordered
            start = int(round(float(start_s) * sample_rate))
            length = int(round(float(duration_s) * sample_rate))
            out[i] = mfcc_summary(waves[name][start : start + length], sample_rate, n_mfcc)
    return out


def _source_facts(source_dir: Path, split: str, data_dir: Optional[str | Path],
                  sample_rate: Optional[int]) -> tuple[Path, int]:
    info = EmbeddingSplit.read_info(source_dir, split)
    data_dir = data_dir if data_dir is not None else info.get("data_dir")
    sample_rate = sample_rate if sample_rate is not None else info.get("sample_rate")
    if data_dir is None or sample_rate is None:
        raise AudiocpcError(f"{EmbeddingSplit.path(source_dir, split, 'json')}: the data folder and "
                            "sample rate of these embeddings are unknown; embed again with "
                            "`audiocpc embed`")
    return Path(data_dir), int(sample_rate)


def mfcc_inputs(source_dir: str | Path, split: str, data_dir: Optional[str | Path] = None,
                sample_rate: Optional[int] = None, n_mfcc: int = 20) -> dict[str, Any]:
    """What the MFCC features of a split are made from, as recorded in their JSON
    (`inputs`): the crops (the source manifest's hash), the audio files they come from (paths,
    sizes, modification times) and the settings."""
    source_dir = Path(source_dir)
    data, rate = _source_facts(source_dir, split, data_dir, sample_rate)
    crops = EmbeddingSplit.read(source_dir, split)
    return normalised_json({
        "crops": {"csv": sha256_file(EmbeddingSplit.path(source_dir, split, "csv"))},
        "audio": files_fingerprint(data, sorted({data / name for name in crops.files})),
        "settings": {"sample_rate": rate, "n_mfcc": n_mfcc},
    })


def write_mfcc_embeddings(source_dir: str | Path, target_dir: str | Path, split: str,
                          data_dir: Optional[str | Path] = None, sample_rate: Optional[int] = None,
                          n_mfcc: int = 20, cache_dir: Optional[str] = None,
                          progress: bool = False) -> Path:
    """Write `<target>/<split>.npy/.csv/.json` with the MFCCs of the crops in
    `<source>/<split>.csv`: the same rows, in the same order, as the CPC embeddings.
    The data folder and sample rate default to those recorded in `<source>/<split>.json`."""
    source_dir, target_dir = Path(source_dir), Path(target_dir)
    data, rate = _source_facts(source_dir, split, data_dir, sample_rate)
    inputs = mfcc_inputs(source_dir, split, data, rate, n_mfcc)  # before reading the audio
    crops = EmbeddingSplit.read(source_dir, split)
    features = crop_mfccs(crops, data, rate, n_mfcc, cache_dir, progress)
    meta = {"features": "mfcc", "source": str(source_dir), "split": split, "data_dir": str(data),
            "sample_rate": rate, "n_mfcc": n_mfcc, "rows": int(features.shape[0]),
            "dim": int(features.shape[1]),
            "summary": "mean and standard deviation over time of each MFCC (25 ms windows, 10 ms hop, 40 mels)",
            "inputs": inputs}
    written = EmbeddingSplit(features, crops.files, crops.labels, crops.start_seconds,
                             crops.duration_seconds, meta).write(target_dir, split)
    return written.array_path
