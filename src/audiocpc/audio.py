"""Audio files: discovery, reading, mixing down to mono and resampling.

Every file's real sample rate is read from the file and resampled with soxr; stereo (or
more channels) is averaged to mono. Problems are raised as AudioReadError naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
import soundfile as sf
import soxr

from audiocpc.errors import AudioReadError, ConfigError


def discover_audio_files(root: str | Path, extensions: Iterable[str]) -> list[Path]:
    """Every file below `root` whose extension is one of `extensions` (case-insensitive),
    sorted so that a data set always comes out in the same order."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"data folder not found: {root} (give an existing folder of audio files)")
    wanted = {"." + e.lower().lstrip(".") for e in extensions}
    found: list[Path] = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        for name in files:
            if os.path.splitext(name)[1].lower() in wanted:
                found.append(Path(folder) / name)
    return sorted(found)


def audio_info(path: str | Path) -> sf._SoundFileInfo:
    try:
        return sf.info(str(path))
    except Exception as exc:  # libsndfile reports format problems as generic errors
        raise AudioReadError(path, _reason(exc)) from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        return "file not found (deleted or a broken link?)"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return f"cannot decode audio: {text.splitlines()[0]}"


def read_audio(path: str | Path, target_sr: int) -> np.ndarray:
    """Decode a file to float32 mono at `target_sr`."""
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioReadError(path, _reason(exc)) from None
    if data.shape[1] == 0:
        raise AudioReadError(path, "the file has no audio channels")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.all(np.isfinite(mono)):
        raise AudioReadError(path, "the file contains NaN or infinite samples")
    if sr != target_sr and mono.size:
        mono = soxr.resample(mono, sr, target_sr, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def relative_name(path: str | Path, root: str | Path) -> str:
    """The path below the data folder, for manifests, labels and messages."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(path).name
