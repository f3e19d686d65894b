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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import numpy as np
from numpy.typing import DTypeLike
import soundfile as sf
import soxr

from audiocpc.errors import AudioReadError, ConfigError


def any_audio_file(root: str | Path, extensions: Iterable[str]) -> bool:
    """Whether `root` holds at least one file with one of `extensions`: stops at the first,
    so an empty or mistyped folder is answered before anything heavy is imported."""
    wanted = {"." + e.lower().lstrip(".") for e in extensions}
    visited: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):  # links followed, as discovery does
        try:
            stat = os.stat(folder)
        except OSError:
            dirs[:] = []
            continue
        if (stat.st_dev, stat.st_ino) in visited:  # a link loop: each real folder once
            dirs[:] = []
            continue
        visited.add((stat.st_dev, stat.st_ino))
        if any(os.path.splitext(name)[1].lower() in wanted for name in files):
            return True
    return False


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


def audio_facts(path: str | Path) -> "AudioFacts":
    """The header facts of a file without decoding it."""
    info = audio_info(path)
    return AudioFacts(int(info.samplerate), int(info.channels), f"{info.format} {info.subtype}",
                      int(info.frames))


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


def readable_stat(path: str | Path) -> os.stat_result:
    """The stat of a regular, non-empty file (following links), or AudioReadError with the
    reason (missing, broken or looping link, not a file, empty). One system call."""
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
    return stat


def check_readable(path: str | Path) -> int:
    """Size in bytes of a regular, non-empty file that can be opened, or AudioReadError
    with the reason (missing, broken or looping link, no permission, not a file, empty)."""
    stat = readable_stat(path)
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


SILENCE_PEAK = 1e-5  # -100 dBFS: nothing audible in the whole file
# Rates outside this range are header damage, not audio (and would make resampling explode).
LOWEST_RATE, HIGHEST_RATE = 100, 2_000_000
# Float files may exceed full scale (1.0) a little; 60 dB above it is not a recording, and
# would make the loss overflow.
MAX_SAMPLE_MAGNITUDE = 1e3


@dataclass(frozen=True)
class AudioFacts:
    """What a file's header says, read in the same pass that decodes it."""

    sample_rate: int
    channels: int
    format: str  # e.g. "WAV PCM_16"
    frames: int  # at the file's own rate

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def read_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Decode a file to float32 mono at `sample_rate`. Any problem with the file, whatever
    its bytes, is raised as AudioReadError with a one-line reason."""
    return read_audio_with_facts(path, sample_rate)[0]


def read_audio_with_facts(path: str | Path, sample_rate: int) -> tuple[np.ndarray, AudioFacts]:
    """`read_audio`, plus the header facts from the same open (no second look at the file)."""
    _check_whole(path)
    try:
        # a bytes path: names that are not valid UTF-8 still open
        with sf.SoundFile(os.fsencode(path)) as handle:
            facts = _facts_of(handle)
            data = handle.read(dtype="float32", always_2d=True)
        file_rate = facts.sample_rate
    except Exception as exc:
        raise AudioReadError(path, read_failure_reason(exc)) from None
    _check_header(path, facts)
    _check_samples(path, data)
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if file_rate != sample_rate and mono.size:
        try:
            mono = soxr.resample(mono, file_rate, sample_rate, quality="HQ")
        except Exception as exc:
            raise AudioReadError(path, f"cannot resample from {file_rate} Hz: {exc}") from None
    return np.ascontiguousarray(mono, dtype=np.float32), facts


def _check_whole(path: str | Path) -> None:
    """A readable file, not cut short (libsndfile would read a truncated WAV silently)."""
    size = check_readable(path)
    truncated = wav_truncation(path, size)
    if truncated:
        raise AudioReadError(path, truncated)


def _facts_of(handle: sf.SoundFile) -> AudioFacts:
    return AudioFacts(int(handle.samplerate), int(handle.channels),
                      f"{handle.format} {handle.subtype}", int(handle.frames))


def _check_header(path: str | Path, facts: AudioFacts) -> None:
    if facts.channels == 0:
        raise AudioReadError(path, "the file has no audio channels")
    if not LOWEST_RATE <= facts.sample_rate <= HIGHEST_RATE:
        raise AudioReadError(path, f"implausible sample rate {facts.sample_rate} Hz in the header")


def _check_samples(path: str | Path, data: np.ndarray) -> None:
    """Decoded samples (of the whole file or a block of it) that are audio."""
    if data.shape[1] == 0:
        raise AudioReadError(path, "the file has no audio channels")
    if not np.all(np.isfinite(data)):
        raise AudioReadError(path, "the file contains NaN or infinite samples")
    peak = float(np.max(np.abs(data))) if data.size else 0.0
    if peak > MAX_SAMPLE_MAGNITUDE:
        raise AudioReadError(path, f"samples as large as {peak:.3g} (full scale is 1.0; a float "
                             f"file above {MAX_SAMPLE_MAGNITUDE:g} is not audio, or is damaged)")


def stream_audio(path: str | Path, sample_rate: int,
                 block_frames: int = 1 << 20) -> tuple[AudioFacts, Iterator[np.ndarray]]:
    """`read_audio_with_facts` in blocks, for files too long to decode whole: the facts, and
    the float32 mono samples at `sample_rate` in consecutive pieces (soxr's streaming
    resampler gives the same samples and length as resampling the whole file). Memory is a
    few blocks whatever the file's length; every problem is an AudioReadError."""
    _check_whole(path)
    try:
        with sf.SoundFile(os.fsencode(path)) as handle:
            facts = _facts_of(handle)
    except Exception as exc:
        raise AudioReadError(path, read_failure_reason(exc)) from None
    _check_header(path, facts)

    def pieces() -> Iterator[np.ndarray]:
        resampler = (soxr.ResampleStream(facts.sample_rate, sample_rate, 1, dtype="float32",
                                         quality="HQ")
                     if facts.sample_rate != sample_rate else None)
        try:
            with sf.SoundFile(os.fsencode(path)) as handle:
                for block in handle.blocks(blocksize=block_frames, dtype="float32",
                                           always_2d=True):
                    _check_samples(path, block)
                    mono = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
                    mono = np.ascontiguousarray(mono, dtype=np.float32)
                    yield mono if resampler is None else resampler.resample_chunk(mono, last=False)
                if resampler is not None:
                    yield resampler.resample_chunk(np.zeros(0, np.float32), last=True)
        except AudioReadError:
            raise
        except Exception as exc:
            raise AudioReadError(path, read_failure_reason(exc)) from None

    return facts, pieces()


def relative_name(path: str | Path, root: str | Path) -> str:
    """The path below the data folder, for manifests, labels and messages."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(path).name


# Variance floor of the standardisation (~-100 dBFS): digital silence stays silence instead
# of being amplified into noise, while speech recorded 60 dB below full scale is rescaled.
VARIANCE_FLOOR = 1e-10
_STATS_BLOCK = 1 << 22  # samples per block when measuring a long recording


class WaveView:
    """A lazy float32 view of a 1-D recording `base` (a memory map, an int16 shard slice):
    behaves like the decoded array, and computes only the slices taken from it. Subclasses
    say how a slice of `base` becomes float32 samples (`__getitem__`)."""

    ndim = 1
    dtype = np.dtype(np.float32)
    base: Any

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.base.shape)

    @property
    def size(self) -> int:
        return int(self.base.size)

    def __len__(self) -> int:
        return int(self.base.shape[0])

    def __getitem__(self, index: Any) -> np.ndarray:  # any numpy index
        raise NotImplementedError

    def __array__(self, dtype: Optional[DTypeLike] = None, copy: Optional[bool] = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


@dataclass(frozen=True)
class WaveStatistics:
    """What data.standardize needs of a whole recording: the mean and variance of its samples
    (float64 sums over blocks of `_STATS_BLOCK` samples from its first)."""

    mean: float
    variance: float

    @property
    def scale(self) -> float:
        """The factor that gives the centred samples unit variance (floored for silence)."""
        return 1.0 / float(np.sqrt(self.variance + VARIANCE_FLOOR))


class StatisticsSums:
    """`wave_statistics` fed piece by piece, in pieces of any length (a file as prepare
    writes it): the pieces are regrouped into the same `_STATS_BLOCK` blocks, so the float64
    sums, and the statistics, are bit for bit those of the whole recording."""

    def __init__(self) -> None:
        self.total = self.total_sq = 0.0
        self.count = 0
        self._parts: list[np.ndarray] = []  # of the block being filled
        self._filled = 0

    def add(self, samples: np.ndarray) -> None:
        while samples.shape[0]:
            take = samples[: _STATS_BLOCK - self._filled]
            samples = samples[take.shape[0]:]
            self._parts.append(take)
            self._filled += take.shape[0]
            if self._filled >= _STATS_BLOCK:
                self._sum_block()

    def _sum_block(self) -> None:
        if not self._parts:
            return
        joined = self._parts[0] if len(self._parts) == 1 else np.concatenate(self._parts)
        self._parts, self._filled = [], 0
        block = np.asarray(joined, dtype=np.float64)  # exact: the sums see the samples as given
        del joined
        self.total += float(block.sum())
        self.total_sq += float(np.square(block).sum())
        self.count += block.shape[0]

    def result(self) -> WaveStatistics:
        self._sum_block()  # the last, shorter block
        n = max(self.count, 1)
        mean = self.total / n
        return WaveStatistics(mean, max(self.total_sq / n - mean**2, 0.0))


def wave_statistics(wave: Any) -> WaveStatistics:
    """The standardisation statistics of a whole 1-D recording (an array, a memory map or a
    `WaveView`), read once in blocks: memory stays one block whatever its length."""
    sums = StatisticsSums()
    for first in range(0, wave.shape[0], _STATS_BLOCK):
        sums.add(wave[first : first + _STATS_BLOCK])
    return sums.result()


class Standardized(WaveView):
    """A recording scaled to zero mean and unit variance, computed on the slices taken from
    it (a memory-mapped file is never copied whole). Slicing it like an array gives float32.
    `statistics`: the recording's, when known (stored by prepare, or measured before);
    otherwise they are measured here, reading every sample once."""

    def __init__(self, wave: Any, statistics: Optional[WaveStatistics] = None):
        self.base = wave
        self.statistics = wave_statistics(wave) if statistics is None else statistics
        self.mean, self.scale = self.statistics.mean, self.statistics.scale

    def __getitem__(self, index: Any) -> np.ndarray:  # any numpy index
        piece = np.asarray(self.base[index], dtype=np.float32)
        return ((piece - np.float32(self.mean)) * np.float32(self.scale)).astype(np.float32)


def standardize(wave: np.ndarray) -> np.ndarray:
    """A whole recording (float32 [samples]) scaled to zero mean and unit variance."""
    return Standardized(wave)[:]
