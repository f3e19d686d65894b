"""A cache of decoded audio: each file decoded and resampled once, then memory-mapped.

An entry is keyed by the file's resolved path, size, modification time and the target
rate, so a changed file is decoded again and a link shares its target's entry. Entries are
written atomically under a temporary name of their own (so two threads or processes writing
the same entry never collide), which is removed if the write fails; temporary files left by
a killed process are swept once they are older than STALE_TEMP_SECONDS.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np

from audiocpc.data.audio import AudioFacts, check_readable, read_audio_with_facts, read_failure_reason
from audiocpc.errors import AudioReadError
from audiocpc.fileio import atomic_save_npy

log = logging.getLogger("audiocpc")

TEMP_PATTERN = ".*.npy.*.tmp*"  # fileio's temporary names for cache entries
# Older than this, a temporary entry belongs to a process that died: nobody writes it any
# more. (A live write of even a long file takes seconds, not minutes.)
STALE_TEMP_SECONDS = 10 * 60

_swept: set[str] = set()
_sweep_lock = threading.Lock()


def default_cache_dir() -> Path:
    base = os.environ.get("AUDIOCPC_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "audiocpc")
    return Path(base) / "audio"


def entry_key(resolved: str | Path, size: int, mtime_ns: int, sample_rate: int) -> str:
    ident = f"{resolved}|{size}|{mtime_ns}|{sample_rate}"
    return hashlib.sha1(ident.encode("utf-8", "surrogateescape")).hexdigest()


class AudioCache:
    def __init__(self, folder: Optional[str | Path] = None):
        self.folder = Path(folder) if folder else default_cache_dir()
        self.sweep_stale_temporaries()

    def key(self, path: str | Path, sample_rate: int) -> str:
        path = Path(path)
        stat = path.stat()
        return entry_key(path.resolve(), stat.st_size, stat.st_mtime_ns, sample_rate)

    def entry(self, path: str | Path, sample_rate: int,
              stat: Optional[os.stat_result] = None) -> Path:
        """Where the decoded copy of `path` lives (given its `stat`, no second look)."""
        if stat is None:
            key = self.key(path, sample_rate)
        else:
            key = entry_key(Path(path).resolve(), stat.st_size, stat.st_mtime_ns, sample_rate)
        return self.folder / key[:2] / f"{key}.npy"

    def load(self, path: str | Path, sample_rate: int) -> np.ndarray:
        """The decoded waveform at `sample_rate`, memory-mapped from the cache. A file that
        cannot be used (gone, a broken link, unreadable, not audio) raises AudioReadError."""
        check_readable(path)
        try:
            entry = self.entry(path, sample_rate)
        except (OSError, RuntimeError) as exc:  # deleted since the check; RuntimeError: link loop
            raise AudioReadError(path, read_failure_reason(exc)) from None
        cached = open_entry(entry)
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
        removed = 0
        cutoff = time.time() - STALE_TEMP_SECONDS
        for tmp in self.folder.glob(f"*/{TEMP_PATTERN}"):
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
                    removed += 1
            except OSError:  # gone already (another process swept it) or not ours to remove
                continue
        if removed:
            log.debug("removed %d stale temporary file(s) from %s", removed, self.folder)
        return removed


def open_entry(entry: Path) -> Optional[np.ndarray]:
    """The memory-mapped entry, or None if it is missing or damaged (then it is removed)."""
    if not entry.exists():
        return None
    try:
        return np.load(entry, mmap_mode="r")
    except (ValueError, OSError):
        entry.unlink(missing_ok=True)  # a damaged entry: decode again
        return None


def store_entry(entry: Path, wave: np.ndarray) -> None:
    """Write `wave` to `entry` atomically (fileio's unique temporary names: two threads
    decoding one file through two links never rename each other's file away)."""
    atomic_save_npy(entry, wave)
