"""A cache of decoded audio: each file decoded and resampled once, then memory-mapped.

An entry is keyed by the file's absolute path, size, modification and change times, inode
and the target rate, so a changed file is decoded again (even an in-place edit that keeps
the size and modification time: it changes the ctime). Entries are written atomically
(temporary file, then rename), so a crash never leaves a half-written array behind, and
checked when opened (one dimension, float32, finite, the length the file's header implies):
an entry that fails is decoded again.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np

from audiocpc.data.audio import audio_info, check_readable, read_audio, read_failure_reason
from audiocpc.errors import AudioReadError
from audiocpc.storage import disk_full_error, is_disk_full, sweep_temporaries


log = logging.getLogger("audiocpc")

FINITE_CHECK_BLOCK = 1 << 20  # samples per block: the check never loads a whole file


def expected_length(path: str | Path, sample_rate: int) -> Optional[int]:
    """Samples a decoding of `path` at `sample_rate` gives, from its header; None where the
    header cannot say exactly (MP3) or cannot be read."""
    try:
        info = audio_info(path)
    except AudioReadError:
        return None
    if not info.samplerate or "MP" in str(info.format).upper():
        return None
    return int(round(info.frames * sample_rate / info.samplerate))


def entry_problem(wave: np.ndarray, expected: Optional[int]) -> Optional[str]:
    """Why a cache entry is not what decoding gives, or None if it is sound."""
    if wave.ndim != 1:
        return f"shape {tuple(wave.shape)}, not one channel"
    if wave.dtype != np.float32:
        return f"dtype {wave.dtype}, not float32"
    # resampling may round the length by a sample or two
    if expected is not None and abs(wave.shape[0] - expected) > 2 + expected // 10_000:
        return f"{wave.shape[0]} samples where the file holds {expected}"
    for start in range(0, wave.shape[0], FINITE_CHECK_BLOCK):
        if not np.isfinite(wave[start : start + FINITE_CHECK_BLOCK]).all():
            return "NaN or infinite samples"
    return None


def default_cache_dir() -> Path:
    base = os.environ.get("AUDIOCPC_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "audiocpc")
    return Path(base) / "audio"


_SWEPT: set[Path] = set()  # cache folders already cleared of orphans by this process


class AudioCache:
    def __init__(self, folder: Optional[str | Path] = None):
        self.folder = Path(folder) if folder else default_cache_dir()
        if self.folder not in _SWEPT:
            _SWEPT.add(self.folder)
            # left by writers that died (a kill, a full disk): nothing else would remove them
            sweep_temporaries(self.folder.glob("*/*.tmp*"))

    def key(self, path: str | Path, sample_rate: int) -> str:
        path = Path(path)
        stat = path.stat()
        ident = (f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}|"
                 f"{stat.st_ino}|{sample_rate}")
        return hashlib.sha1(ident.encode("utf-8", "surrogateescape")).hexdigest()

    def entry(self, path: str | Path, sample_rate: int) -> Path:
        key = self.key(path, sample_rate)
        return self.folder / key[:2] / f"{key}.npy"

    def load(self, path: str | Path, sample_rate: int) -> np.ndarray:
        """The decoded waveform at `sample_rate`, memory-mapped from the cache. A file that
        cannot be used (gone, a broken link, unreadable, not audio) raises AudioReadError."""
        check_readable(path)
        try:
            entry = self.entry(path, sample_rate)
        except (OSError, RuntimeError) as exc:  # deleted since the check; RuntimeError: link loop
            raise AudioReadError(path, read_failure_reason(exc)) from None
        if entry.exists():
            try:
                cached = np.load(entry, mmap_mode="r")
            except (ValueError, OSError):
                cached, problem = None, "not a readable array"
            else:
                problem = entry_problem(cached, expected_length(path, sample_rate))
            if problem is None:
                return cached
            log.warning("%s: its decoded copy in the cache is damaged (%s); decoding it again",
                        path, problem)
            del cached
            entry.unlink(missing_ok=True)
        wave = read_audio(path, sample_rate)
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_name(f"{entry.stem}.{os.getpid()}.tmp.npy")
        try:
            np.save(tmp, wave)
            os.replace(tmp, entry)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if is_disk_full(exc):
                raise disk_full_error(tmp, "free space, or move the decoded-audio cache to a "
                                      "bigger disk with data.cache_dir or AUDIOCPC_CACHE") from None
            raise
        return np.load(entry, mmap_mode="r")
