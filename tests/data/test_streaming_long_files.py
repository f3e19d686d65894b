"""Streaming mode keeps memory bounded on a long file (issue 13, item 2): the file is
measured in blocks and read crop by crop, never held whole while its crops pass through the
shuffle buffer, and the crops are still exactly those random access reads."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from audiocpc import load_config
from audiocpc.data import audio, streaming
from audiocpc.data.prepared import open_data, prepare_corpus
from audiocpc.data.streaming import StreamSampler

RATE = 8000
LONG_SAMPLES = 60 * RATE  # one minute: 480,000 samples, 1.9 MB as float32
CROP = 2000
STATS_BLOCK = 16_384  # the block the statistics are measured in, made small here


def _corpus(tmp_path: Path) -> Any:
    source = tmp_path / "audio"
    source.mkdir()
    rng = np.random.default_rng(3)
    t = np.arange(LONG_SAMPLES) / RATE
    sf.write(source / "long.wav", (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)
                                   + 0.1).astype(np.float32), RATE)  # an offset: the mean matters
    sf.write(source / "short.wav", (0.2 * rng.standard_normal(RATE)).astype(np.float32), RATE)
    data = load_config("cpc_tiny", [f"data.cache_dir={tmp_path / 'cache'}", f"data.sample_rate={RATE}",
                                    "data.full_duration=0.25", "data.standardize=true"]).data
    prepare_corpus(source, tmp_path / "wds", data, workers=1, progress=False, shard_format="webdataset")
    return open_data((tmp_path / "wds").resolve().as_uri(), data).corpus()


def test_streaming_reads_a_long_file_in_bounded_spans_with_the_crops_of_random_access(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = _corpus(tmp_path)
    long_file = int(np.argmax(corpus.lengths))
    assert corpus.lengths[long_file] == LONG_SAMPLES
    monkeypatch.setattr(audio, "_STATS_BLOCK", STATS_BLOCK)
    # files over this are read span by span (raising=False: the old code had no such limit)
    monkeypatch.setattr(streaming, "WHOLE_FILE_SAMPLES", 50_000, raising=False)
    lengths: list[int] = []
    real_read = streaming.read_samples

    def counting_read(handle: Any, offset: int, length: int) -> np.ndarray:
        lengths.append(length)
        return real_read(handle, offset, length)

    monkeypatch.setattr(streaming, "read_samples", counting_read)
    sampler = StreamSampler(corpus, CROP, 4, seed=1, buffer=16)
    per_pass = sampler.crops_per_pass
    emits = 3 * per_pass
    tracemalloc.start()
    try:
        stream = sampler.stream()
        crops = [stream.emit()[0] for _ in range(emits)]  # the samples are dropped as they come
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # the old code read the whole minute at once and held it (int16, float32, standardised):
    # ~4.8 MB; now the largest read is one statistics block and nothing holds the file
    assert max(lengths) <= STATS_BLOCK
    assert peak < 1_000_000, f"peak {peak} bytes while streaming a {LONG_SAMPLES}-sample file"
    first_pass = [crop for crop in crops if crop.pass_number == 0]
    assert sorted(c.serial for c in first_pass) == list(range(per_pass))
    assert sum(1 for c in first_pass if c.file == long_file) == LONG_SAMPLES // CROP
    expected = np.empty(CROP, np.float32)
    again = sampler.stream()  # the same stream, its samples checked this time
    for _ in range(emits):  # standardised with the whole file's statistics, exactly
        crop, samples = again.emit()
        corpus.read(crop.file, crop.start, expected)
        assert np.array_equal(samples, expected)
