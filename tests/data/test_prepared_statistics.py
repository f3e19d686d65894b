"""Standardisation statistics stored at prepare time (issue 13): prepare sums each file's
mean and variance over the samples it writes, exactly as a reader would measure them on the
shard, and training, embedding and streaming crops use them instead of reading every sample
of the file again. A corpus prepared before (rows without them) is measured, as it was, and
gives the same crops."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from audiocpc import load_config
from audiocpc.data import audio, prepared_shards
from audiocpc.data.audio import StatisticsSums, WaveStatistics, wave_statistics
from audiocpc.data.corpus import CropSampler
from audiocpc.data.prepared import (MANIFEST_NAME, RemoteShardSlice, ShardSlice, open_data,
                                    prepare_corpus, read_manifest)
from audiocpc.data.streaming import StreamSampler
from audiocpc.errors import ConfigError

RATE = 8000
STATS_BLOCK = 4096  # made small: the long file spans several blocks, and ends in a short one
CROP = 2000


def _folder(folder: Path) -> Path:
    """A quiet file (-50 dBFS), a loud one with an offset (the mean matters), and a long one
    at 22.05 kHz: resampled in irregular pieces when prepare streams it."""
    rng = np.random.default_rng(5)
    folder.mkdir(parents=True)
    t = np.arange(RATE) / RATE
    sf.write(folder / "quiet.wav", (0.003 * np.sin(2 * np.pi * 300 * t)
                                    + 0.0003 * rng.standard_normal(t.size)).astype(np.float32), RATE)
    sf.write(folder / "loud.wav", np.clip(0.8 * np.sin(2 * np.pi * 500 * t) + 0.15, -1, 1)
             .astype(np.float32), RATE)
    long_rate = 22050
    t = np.arange(int(3.7 * long_rate)) / long_rate
    sf.write(folder / "long.wav", (0.4 * np.sin(2 * np.pi * 180 * t) + 0.05 * rng.standard_normal(t.size)
                                   - 0.05).astype(np.float32), long_rate)
    return folder


def _config(tmp_path: Path, *overrides: str) -> Any:
    return load_config("cpc_tiny", [f"data.cache_dir={tmp_path / 'cache'}", f"data.sample_rate={RATE}",
                                    "data.full_duration=0.25", "data.standardize=true", *overrides])


def _data(tmp_path: Path) -> Any:
    return _config(tmp_path).data


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audio, "_STATS_BLOCK", STATS_BLOCK)
    # the long file is streamed in blocks of odd length (the resampler's pieces vary too)
    monkeypatch.setattr(prepared_shards, "STREAM_SAMPLES", 10_000)
    monkeypatch.setattr(prepared_shards, "BLOCK_FRAMES", 3001)


def _prepared(tmp_path: Path, shard_format: str = "int16", name: str = "corpus") -> Path:
    out = tmp_path / name
    prepare_corpus(_folder(tmp_path / f"audio-{name}"), out, _data(tmp_path), workers=1,
                   progress=False, shard_format=shard_format)
    return out


def _strip_statistics(corpus: Path) -> None:
    """Rewrite the manifest as versions before the stored statistics wrote it."""
    header, rows = read_manifest(corpus)
    for row in rows:
        row.pop("mean", None)
        row.pop("variance", None)
    lines = [json.dumps(header)] + [json.dumps(row) for row in rows]
    (corpus / MANIFEST_NAME).write_text("\n".join(lines) + "\n")


def _never_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    def measuring(wave: Any) -> WaveStatistics:
        raise AssertionError("a file's statistics were measured again")
    monkeypatch.setattr(audio, "wave_statistics", measuring)


def test_pieces_of_any_length_sum_to_the_statistics_of_the_whole(small_blocks: None) -> None:
    wave = (np.random.default_rng(1).standard_normal(3 * STATS_BLOCK + 517) * 0.2 + 0.03).astype(np.float32)
    whole = wave_statistics(wave)
    assert whole.mean == pytest.approx(float(np.mean(wave, dtype=np.float64)), rel=1e-12)
    assert whole.variance == pytest.approx(float(np.var(wave, dtype=np.float64)), rel=1e-9)
    for cuts in ([], [1, 2, STATS_BLOCK, STATS_BLOCK + 1], [5000, 5001, 9000], list(range(0, wave.size, 777))):
        sums = StatisticsSums()
        for piece in np.split(wave, cuts):
            sums.add(piece)
        assert sums.result() == whole


@pytest.mark.parametrize("shard_format", ["int16", "webdataset"])
def test_stored_statistics_are_exactly_those_measured_on_the_shard(
        tmp_path: Path, small_blocks: None, shard_format: str) -> None:
    corpus = open_data(_prepared(tmp_path, shard_format), _data(tmp_path)).corpus()
    names = [p.name for p in corpus.paths]
    assert sorted(names) == ["long.wav", "loud.wav", "quiet.wav"]
    assert corpus.lengths[names.index("long.wav")] > 5 * STATS_BLOCK
    for index, entry in enumerate(corpus.entries):
        assert entry.statistics is not None
        assert entry.statistics == wave_statistics(corpus.wave(index))  # ==: to the last bit
    quiet, loud = (corpus.entries[names.index(n)].statistics for n in ("quiet.wav", "loud.wav"))
    assert quiet.variance < 1e-5 < 0.1 < loud.variance and loud.mean > 0.1
    header, rows = read_manifest(tmp_path / "corpus")
    assert header["version"] == 1  # optional fields: older readers ignore them
    assert all(isinstance(r["mean"], float) and isinstance(r["variance"], float) for r in rows)


@pytest.mark.parametrize("remote", [False, True])
def test_training_embedding_and_streaming_crops_never_measure_a_prepared_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, remote: bool) -> None:
    folder: str | Path = _prepared(tmp_path, "webdataset")
    if remote:  # fsspec's memory://, the code path of s3:// (read by byte ranges)
        fsspec = pytest.importorskip("fsspec")
        memory = fsspec.filesystem("memory")
        if memory.exists("/statistics-corpus"):
            memory.rm("/statistics-corpus", recursive=True)
        memory.put(str(folder), "/statistics-corpus", recursive=True)
        folder = "memory://statistics-corpus"
    corpus = open_data(folder, _data(tmp_path)).corpus()
    assert all(entry.statistics is not None for entry in corpus.entries)
    assert isinstance(corpus.entries[0], RemoteShardSlice if remote else ShardSlice)
    _never_measured(monkeypatch)
    CropSampler(corpus, CROP, 8, seed=0).batch(0)  # training's random access
    for index in range(len(corpus)):  # embedding: corpus.waves(), sliced
        corpus.waves()[index][:CROP]
    StreamSampler(corpus, CROP, 4, seed=0, buffer=8).batch(0)  # data.streaming


def test_a_manifest_without_statistics_is_measured_to_the_same_crops(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _prepared(tmp_path, "webdataset")
    data = _data(tmp_path)
    stored = open_data(folder, data).corpus()
    _strip_statistics(folder)
    older = open_data(folder, data).corpus()
    assert all(entry.statistics is None for entry in older.entries)
    measured: list[int] = []
    real = audio.wave_statistics

    def counting(wave: Any) -> WaveStatistics:
        measured.append(wave.shape[0])
        return real(wave)

    monkeypatch.setattr(audio, "wave_statistics", counting)
    for step in range(3):
        assert np.array_equal(CropSampler(older, CROP, 8, seed=0).batch(step),
                              CropSampler(stored, CROP, 8, seed=0).batch(step))
    assert sorted(measured) == sorted(older.lengths.tolist())  # each file once, then kept
    for index in range(len(older)):
        assert np.array_equal(older.recording(index)[:], stored.recording(index)[:])
    streamed = [StreamSampler(c, CROP, 4, seed=2, buffer=8).batch(1) for c in (older, stored)]
    assert np.array_equal(*streamed)


def test_training_steps_on_a_prepared_corpus_never_measure_a_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from audiocpc.training.trainer import train

    folder = _prepared(tmp_path)
    _never_measured(monkeypatch)
    config = _config(tmp_path, f"output.dir={tmp_path / 'run'}", "train.epochs=1",
                     "train.steps_per_epoch=2")
    result = train(config, folder, progress=False)
    assert len(result.step_losses) == 2 and all(np.isfinite(result.step_losses))


@pytest.mark.parametrize("mean, variance", [(0.1, -1.0), ("0.1", 0.2), (0.1, None), (float("nan"), 0.2)])
def test_a_damaged_statistic_in_the_manifest_is_one_line_naming_the_file_and_the_fix(
        tmp_path: Path, mean: Any, variance: Any) -> None:
    folder = _prepared(tmp_path)
    header, rows = read_manifest(folder)
    rows[0]["mean"], rows[0]["variance"] = mean, variance
    (folder / MANIFEST_NAME).write_text("\n".join(json.dumps(r) for r in [header, *rows]) + "\n")
    with pytest.raises(ConfigError) as caught:
        open_data(folder, _data(tmp_path))
    message = str(caught.value)
    assert "\n" not in message and MANIFEST_NAME in message and rows[0]["file"] in message
    assert "variance" in message and "audiocpc prepare DATA --out CORPUS --force" in message
