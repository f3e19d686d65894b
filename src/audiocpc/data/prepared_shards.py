"""The torch-free half of the prepared-corpus format (data/prepared.py owns the format):
recognising a prepared corpus (so the command line can answer before torch loads) and
writing one shard (so decoding worker processes start in a moment).

A shard holds little-endian int16 samples, files end to end; each file is scaled to its own
peak (sample = int16 x scale, scale = peak / FULL_SCALE). While a file is written its
standardisation statistics are summed over those very samples (`dequantize`, as a reader
sees them), so no reader has to measure them again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from audiocpc.data.audio import (SILENCE_PEAK, StatisticsSums, WaveStatistics, audio_facts,
                                read_audio_with_facts, stream_audio)
from audiocpc.data.remote import Location, local_path
from audiocpc.errors import AudioReadError

MANIFEST_NAME = "manifest.jsonl"
FULL_SCALE = 32767  # int16 steps from zero to a file's peak (-32768 unused: symmetric)
# Files of more samples (frames x channels) than this are decoded in blocks of BLOCK_FRAMES:
# 8 Mi float32 samples is 32 MB, about 95 s of 44.1 kHz stereo.
STREAM_SAMPLES = 1 << 23
BLOCK_FRAMES = 1 << 20


def quantize(wave: np.ndarray, scale: float) -> np.ndarray:
    """Float samples as int16 steps of `scale` (rounded to the nearest step)."""
    steps = np.rint(np.asarray(wave, dtype=np.float64) / scale)
    return np.clip(steps, -FULL_SCALE, FULL_SCALE).astype("<i2")


def dequantize(steps: np.ndarray, scale: float) -> np.ndarray:
    """int16 steps as the float32 samples every reader of a prepared corpus gets."""
    return np.asarray(steps, dtype=np.float32) * np.float32(scale)


def write_pieces(out: Any, pieces: Any, scale: float) -> tuple[int, WaveStatistics]:
    """Write a file's float32 pieces to `out` as int16 steps of `scale`: (samples written,
    the statistics of the samples as they will be read back)."""
    sums = StatisticsSums()
    length = 0
    for piece in pieces:
        steps = quantize(piece, scale)
        out.write(steps.tobytes())
        sums.add(dequantize(steps, scale))
        length += piece.shape[0]
    return length, sums.result()


STATISTICS_FIELDS = ("mean", "variance")


def statistics_fields(statistics: WaveStatistics) -> dict[str, float]:
    """A file's statistics as its manifest row (and tar .json) keeps them."""
    return dict(zip(STATISTICS_FIELDS, (statistics.mean, statistics.variance)))


def stored_statistics(row: dict[str, Any]) -> Optional[WaveStatistics]:
    """The statistics a manifest row keeps; None for a row written before they were stored
    (such a file is measured when first read, as it always was). ValueError, with the
    reason, for values no prepare writes (a damaged manifest)."""
    if all(k not in row for k in STATISTICS_FIELDS):
        return None
    values: list[Any] = [row.get(k) for k in STATISTICS_FIELDS]
    mean, variance = values
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
                  for v in (mean, variance))
    if not numbers or variance < 0:
        raise ValueError(f"mean {mean!r} and variance {variance!r} (two finite numbers, the "
                         "variance not negative)")
    return WaveStatistics(float(mean), float(variance))


def scale_for(peak: float) -> float:
    """The int16 step of a file of this peak (any step for digital silence: it stays zero)."""
    return peak / FULL_SCALE if peak > 0 else 1.0 / FULL_SCALE


def is_prepared(folder: str | Path) -> bool:
    """Whether `folder` (a path, a file:// URL or any fsspec URL) is a prepared corpus (holds
    a manifest). A URL that cannot be reached is one clear ConfigError."""
    local = local_path(folder)
    if local is not None:
        return (local / MANIFEST_NAME).is_file()
    return Location(folder).is_file(MANIFEST_NAME)


def url_problems(url: str) -> list[str]:
    """Why `url` (not file://) cannot be read as a prepared corpus: nothing, or one line."""
    if is_prepared(url):
        return []
    return [f"--data: {url} holds no prepared corpus (no {MANIFEST_NAME} there); a URL must "
            "point at a folder written by audiocpc prepare"]


@dataclass(frozen=True)
class ShardTask:
    """One worker's share: consecutive original files, written end to end into one shard."""

    number: int
    paths: list[Path]
    sample_rate: int
    shard: Path


def _pieces(path: Path, sample_rate: int) -> tuple[dict[str, Any], Any]:
    """(facts, a function giving the float32 pieces at `sample_rate`; callable again)."""
    facts = audio_facts(path)
    if facts.frames * max(facts.channels, 1) <= STREAM_SAMPLES:
        wave, facts = read_audio_with_facts(path, sample_rate)
        return _facts(facts, wave.shape[0]), lambda: iter([wave])
    # long: one streamed pass for the length and peak here, the caller streams again to write
    facts, first = stream_audio(path, sample_rate, BLOCK_FRAMES)
    samples, peak = 0, 0.0
    for piece in first:
        samples += piece.shape[0]
        peak = max(peak, float(np.max(np.abs(piece))) if piece.size else 0.0)
    return (_facts(facts, samples) | {"peak": peak},
            lambda: stream_audio(path, sample_rate, BLOCK_FRAMES)[1])


def _facts(facts: Any, samples: int) -> dict[str, Any]:
    return {"readable": True, "sample_rate": facts.sample_rate, "channels": facts.channels,
            "format": facts.format, "duration": facts.duration, "samples": samples}


def decode_for_shard(path: Path, sample_rate: int) -> tuple[dict[str, Any], float, Any]:
    """(facts with the file's peak, its int16 scale, a function giving its float32 pieces at
    `sample_rate`): what every shard format writes. AudioReadError when it cannot be read."""
    facts, pieces = _pieces(path, sample_rate)
    if "peak" not in facts:
        (wave,) = list(pieces())
        facts["peak"] = float(np.max(np.abs(wave))) if wave.size else 0.0
    return facts, scale_for(facts["peak"]), pieces


def write_shard(task: ShardTask) -> list[dict[str, Any]]:
    """Decode the task's files into its shard: per file its facts and where it lies (or why
    it cannot be read). Runs in a worker process; memory is one file (or block) at a time."""
    results: list[dict[str, Any]] = []
    written = 0
    with open(task.shard, "wb") as out:
        for path in task.paths:
            try:
                facts, scale, pieces = decode_for_shard(path, task.sample_rate)
                peak = facts.pop("peak")
                length, statistics = write_pieces(out, pieces(), scale)
                if length != facts["samples"]:  # changed between the two passes
                    raise AudioReadError(path, "changed while it was being prepared; run again")
            except (AudioReadError, MemoryError) as exc:
                out.seek(written * 2)  # drop what was written of this file
                out.truncate()
                reason = exc.reason if isinstance(exc, AudioReadError) else "not enough memory"
                results.append({"readable": False, "reason": reason})
                continue
            facts["silent"] = peak < SILENCE_PEAK
            results.append(facts | {"offset": written, "length": length, "scale": scale}
                           | statistics_fields(statistics))
            written += length
    if written == 0:
        task.shard.unlink()
    return results
