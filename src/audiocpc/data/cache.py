"""A cache of decoded audio: each file decoded and resampled once, then memory-mapped.

An entry is keyed by the file's resolved path, size, modification and change times, inode
and the target rate, so a changed file is decoded again (even an in-place edit that keeps
the size and modification time: it changes the ctime) and a link shares its target's entry.
Entries are written atomically under a temporary name of their own (so two threads or
processes writing the same entry never collide), which is removed if the write fails;
temporary files left by a killed process are swept once they are older than
STALE_TEMP_SECONDS. An entry is checked when opened (one dimension, float32, finite, the
length the file's header implies): one that fails is decoded again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Optional

import numpy as np

from audiocpc.data.audio import (AudioFacts, audio_facts, check_readable, read_audio_with_facts,
                                 read_failure_reason)
from audiocpc.errors import AudioReadError
from audiocpc.fileio import atomic_save_npy, disk_full_as, sweep_temporaries

log = logging.getLogger("audiocpc")

TEMP_PATTERN = ".*.npy.*.tmp*"  # fileio's temporary names for cache entries
# Older than this, a temporary entry belongs to a process that died: nobody writes it any
# more. (A live write of even a long file takes seconds, not minutes.) The writer's PID is
# no proof: a cache folder may be shared with processes of other machines.
STALE_TEMP_SECONDS = 10 * 60
FINITE_CHECK_BLOCK = 1 << 20  # samples per block: the check never loads a whole file

_swept: set[str] = set()
_sweep_lock = threading.Lock()


def default_cache_dir() -> Path:
    base = os.environ.get("AUDIOCPC_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "audiocpc")
    return Path(base) / "audio"


def entry_key(resolved: str | Path, stat: os.stat_result, sample_rate: int) -> str:
    ident = (f"{resolved}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}|{stat.st_ino}|"
             f"{sample_rate}")
    return hashlib.sha1(ident.encode("utf-8", "surrogateescape")).hexdigest()


def expected_length(facts: AudioFacts, sample_rate: int) -> Optional[int]:
    """Samples a decoding at `sample_rate` gives, from the header's facts; None where the
    header cannot say exactly (MP3)."""
    if not facts.sample_rate or "MP" in facts.format.upper():
        return None
    return int(round(facts.frames * sample_rate / facts.sample_rate))


def header_length(path: str | Path, sample_rate: int) -> Optional[int]:
    """`expected_length` from the file's header; None where it cannot be read."""
    try:
        return expected_length(audio_facts(path), sample_rate)
    except AudioReadError:
        return None


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


class AudioCache:
    def __init__(self, folder: Optional[str | Path] = None):
        self.folder = Path(folder) if folder else default_cache_dir()
        self.sweep_stale_temporaries()

    def key(self, path: str | Path, sample_rate: int) -> str:
        path = Path(path)
        return entry_key(path.resolve(), path.stat(), sample_rate)

    def entry(self, path: str | Path, sample_rate: int,
              stat: Optional[os.stat_result] = None) -> Path:
        """Where the decoded copy of `path` lives (given its `stat`, no second look)."""
        if stat is None:
            key = self.key(path, sample_rate)
        else:
            key = entry_key(Path(path).resolve(), stat, sample_rate)
        return self.folder / key[:2] / f"{key}.npy"

    def load(self, path: str | Path, sample_rate: int) -> np.ndarray:
        """The decoded waveform at `sample_rate`, memory-mapped from the cache. A file that
        cannot be used (gone, a broken link, unreadable, not audio) raises AudioReadError."""
        check_readable(path)
        try:
            entry = self.entry(path, sample_rate)
        except (OSError, RuntimeError) as exc:  # deleted since the check; RuntimeError: link loop
            raise AudioReadError(path, read_failure_reason(exc)) from None
        cached = open_entry(entry, header_length(path, sample_rate), path)
        if cached is not None:
            return cached
        self.decode(path, sample_rate, entry)
        return np.load(entry, mmap_mode="r")

    def decode(self, path: str | Path, sample_rate: int, entry: Path) -> tuple[np.ndarray, AudioFacts]:
        """Decode `path` and store it as `entry`; the waveform (in memory) and its facts."""
        wave, facts = read_audio_with_facts(path, sample_rate)
        store_entry(entry, wave)
        return wave, facts

    def sweep_stale_temporaries(self) -> int:
        """Remove temporary entries of processes that died mid-write (once per process)."""
        with _sweep_lock:
            if str(self.folder) in _swept:
                return 0
            _swept.add(str(self.folder))
        removed = sweep_temporaries(self.folder.glob(f"*/{TEMP_PATTERN}"), STALE_TEMP_SECONDS)
        if removed:
            log.debug("removed %d stale temporary file(s) from %s", removed, self.folder)
        return removed


def open_entry(entry: Path, expected: Optional[int] = None,
               source: Optional[str | Path] = None) -> Optional[np.ndarray]:
    """The memory-mapped entry, or None if it is missing or damaged (then it is removed):
    unreadable, or not what decoding `source` gives (`entry_problem`, with `expected`
    samples when the header says)."""
    if not entry.exists():
        return None
    problem: Optional[str]
    try:
        cached = np.load(entry, mmap_mode="r")
    except (ValueError, OSError):
        cached, problem = None, "not a readable array"
    else:
        problem = entry_problem(cached, expected)
    if problem is None:
        return cached
    log.warning("%s: its decoded copy in the cache is damaged (%s); decoding it again",
                source or entry, problem)
    del cached  # the memory map, before the file is removed
    entry.unlink(missing_ok=True)
    return None


def store_entry(entry: Path, wave: np.ndarray) -> None:
    """Write `wave` to `entry` atomically (fileio's unique temporary names: two threads
    decoding one file through two links never rename each other's file away)."""
    with disk_full_as(entry, "free space, or move the decoded-audio cache to a bigger disk "
                      "with data.cache_dir or AUDIOCPC_CACHE"):
        atomic_save_npy(entry, wave)
