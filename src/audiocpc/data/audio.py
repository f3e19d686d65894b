"""Audio files: discovery, reading, mixing down to mono and resampling.

Every file's real sample rate is read from the file and resampled with soxr; stereo (or
more channels) is averaged to mono. Problems are raised as AudioReadError naming the file.
"""

from __future__ import annotations

import errno
import os
import re
import stat as statmod
import struct
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import soundfile as sf
import soxr

from audiocpc.errors import AudioReadError, ConfigError


def discover_audio_files(root: str | Path, extensions: Iterable[str]) -> list[Path]:
    """Every file below `root` whose extension is one of `extensions` (case-insensitive),
    sorted so that a data set always comes out in the same order.

    Linked folders are followed, but each real folder is visited once, so a link loop cannot
    recurse forever. Broken or looping file links are kept: reading them gives a clear reason.
    Folders that cannot be listed are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"data folder not found: {root} (give an existing folder of audio files)")
    wanted = {"." + e.lower().lstrip(".") for e in extensions}
    found: list[Path] = []
    visited: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        try:
            stat = os.stat(folder)
        except OSError:
            dirs[:] = []
            continue
        if (stat.st_dev, stat.st_ino) in visited:  # reached again through a link
            dirs[:] = []
            continue
        visited.add((stat.st_dev, stat.st_ino))
        dirs.sort()
        for name in files:
            if os.path.splitext(name)[1].lower() in wanted:
                found.append(Path(folder) / name)
    return sorted(found)


def audio_info(path: str | Path) -> sf._SoundFileInfo:
    check_readable(path)
    try:
        return sf.info(os.fsencode(path))
    except Exception as exc:  # libsndfile reports format problems as generic errors
        raise AudioReadError(path, read_failure_reason(exc)) from None


def read_failure_reason(exc: BaseException) -> str:
    """A one-line reason for a failed read, without the path (the error names it)."""
    if isinstance(exc, FileNotFoundError):
        return "file not found (deleted after it was found, or a broken link)"
    if isinstance(exc, PermissionError):
        return "permission denied (the file is not readable by this user)"
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
        return "symbolic link loop (the link points back to itself)"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot read file: {exc.strerror}"
    if isinstance(exc, MemoryError):
        return "not enough memory to decode this file"
    text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
    # libsndfile says "Error opening '<path>': <what>"; the path is already in the message
    text = re.sub(r"^Error opening .*?: (?=\S)", "", text).rstrip(".")
    if text in ("Format not recognised", "File contains data in an unknown format"):
        return "not a supported audio format (or not audio at all)"
    if text == "Channel count is zero":
        return "the file has no audio channels"
    return f"cannot decode audio: {text}"


def check_readable(path: str | Path) -> int:
    """Size in bytes of a regular, non-empty file that can be opened, or AudioReadError
    with the reason (missing, broken or looping link, no permission, not a file, empty)."""
    path = Path(path)
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise AudioReadError(path, "broken symbolic link (its target does not exist)") from None
        raise AudioReadError(path, read_failure_reason(FileNotFoundError())) from None
    except OSError as exc:
        raise AudioReadError(path, read_failure_reason(exc)) from None
    if not statmod.S_ISREG(stat.st_mode):  # a fifo would block, a device never ends
        raise AudioReadError(path, "not a regular file")
    if stat.st_size == 0:
        raise AudioReadError(path, "empty file (0 bytes)")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise AudioReadError(path, read_failure_reason(exc)) from None
    return stat.st_size


def wav_truncation(path: str | Path, size: int) -> Optional[str]:
    """The reason a RIFF/WAVE file is cut short, or None. libsndfile silently reads what
    is there, so a half-copied file would otherwise look like a shorter, valid one."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            offset = 12
            rate = block_align = 0
            while offset + 8 <= size:
                handle.seek(offset)
                chunk = handle.read(8)
                if len(chunk) < 8:
                    return None
                chunk_id, chunk_size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if chunk_id == b"fmt " and chunk_size >= 16:
                    _, _, rate, _, block_align = struct.unpack("<HHIIH", handle.read(14))
                if chunk_id == b"data":
                    available = size - offset - 8
                    if chunk_size in (0, 0xFFFFFFFF) or chunk_size <= available:
                        return None  # 0 / 0xFFFFFFFF: written by a stream that never patched it
                    if rate and block_align:
                        def seconds(n: int) -> str:
                            return f"{n / block_align / rate:.3f} s"
                        return (f"truncated WAV: the header promises {seconds(chunk_size)} of "
                                f"audio but the file holds {seconds(available)}")
                    return (f"truncated WAV: the header promises {chunk_size} bytes of audio "
                            f"but the file holds {available}")
                offset += 8 + chunk_size + (chunk_size & 1)
    except (OSError, struct.error):
        return None
    return None


# Rates outside this range are header damage, not audio (and would make resampling explode).
LOWEST_RATE, HIGHEST_RATE = 100, 2_000_000
# Float files may exceed full scale (1.0) a little; 60 dB above it is not a recording, and
# would make the loss overflow.
MAX_SAMPLE_MAGNITUDE = 1e3


def read_audio(path: str | Path, target_sr: int) -> np.ndarray:
    """Decode a file to float32 mono at `target_sr`. Any problem with the file, whatever
    its bytes, is raised as AudioReadError with a one-line reason."""
    size = check_readable(path)
    truncated = wav_truncation(path, size)
    if truncated:
        raise AudioReadError(path, truncated)
    try:
        # a bytes path: names that are not valid UTF-8 still open
        data, sr = sf.read(os.fsencode(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioReadError(path, read_failure_reason(exc)) from None
    if data.shape[1] == 0:
        raise AudioReadError(path, "the file has no audio channels")
    if not LOWEST_RATE <= sr <= HIGHEST_RATE:
        raise AudioReadError(path, f"implausible sample rate {sr} Hz in the header")
    if not np.all(np.isfinite(data)):
        raise AudioReadError(path, "the file contains NaN or infinite samples")
    peak = float(np.max(np.abs(data))) if data.size else 0.0
    if peak > MAX_SAMPLE_MAGNITUDE:
        raise AudioReadError(path, f"samples as large as {peak:.3g} (full scale is 1.0; a float "
                             f"file above {MAX_SAMPLE_MAGNITUDE:g} is not audio, or is damaged)")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if sr != target_sr and mono.size:
        try:
            mono = soxr.resample(mono, sr, target_sr, quality="HQ")
        except Exception as exc:
            raise AudioReadError(path, f"cannot resample from {sr} Hz: {exc}") from None
    return np.ascontiguousarray(mono, dtype=np.float32)


def relative_name(path: str | Path, root: str | Path) -> str:
    """The path below the data folder, for manifests, labels and messages."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(path).name
