"""data/mapped.py through the corpus: giving back the pages of the memory maps leaves every
crop as it was (int16 shards and float32 cache files, views taken before a release), and
keeps the file-backed RSS bounded while a map of a file much larger than the budget is read
through (by training's crops or by embedding's `corpus.waves()`)."""

from __future__ import annotations

import mmap
import pickle
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest

from audiocpc.data.corpus import AudioCorpus, CropSampler
from audiocpc.data.mapped import MAPPED_AROUND_BYTES, mapping_of, release_pages
from audiocpc.data.prepared import ShardSlice

RELEASABLE = hasattr(mmap, "MADV_DONTNEED") and hasattr(mmap.mmap, "madvise")  # Linux


def _shard(path: Path, samples: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    rng.integers(-32767, 32768, samples, dtype=np.int16).astype("<i2").tofile(path)
    return path


def _corpus(tmp_path: Path, entries: list[Any], lengths: list[int], **fields: Any) -> AudioCorpus:
    paths = [tmp_path / f"{i}.wav" for i in range(len(entries))]
    return AudioCorpus(tmp_path, 16000, paths, entries, np.asarray(lengths, np.int64), **fields)


def _mixed_corpus(tmp_path: Path, **fields: Any) -> AudioCorpus:
    """Two files in one int16 shard and one float32 cache file."""
    shard = _shard(tmp_path / "0.bin", 300_000)
    cache = tmp_path / "cache.npy"
    np.save(cache, np.random.default_rng(1).standard_normal(200_000).astype(np.float32))
    entries = [ShardSlice(shard, 0, 120_000, 0.5), ShardSlice(shard, 120_000, 180_000, 0.25),
               cache]
    return _corpus(tmp_path, entries, [120_000, 180_000, 200_000], **fields)


def _rss_file_mib() -> Optional[float]:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssFile:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


@pytest.mark.parametrize("standardize", [False, True])
def test_crops_are_the_same_with_a_release_before_every_read(
        tmp_path: Path, standardize: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    kept = _mixed_corpus(tmp_path, standardize=standardize)
    released = _mixed_corpus(tmp_path, standardize=standardize, release_bytes=1)
    calls: list[int] = []
    real = AudioCorpus.release_pages

    def counted(corpus: AudioCorpus) -> int:
        calls.append(real(corpus) if corpus is released else -1)
        return calls[-1]
    monkeypatch.setattr(AudioCorpus, "release_pages", counted)
    for step in range(20):
        a = CropSampler(kept, 2048, 8, seed=3).batch(step)
        b = CropSampler(released, 2048, 8, seed=3).batch(step)
        np.testing.assert_array_equal(a, b)
    # before every read of `released` (never of `kept`), once both maps were open: both
    assert len(calls) >= 20 * 8 and -1 not in calls and calls[-1] == RELEASABLE * 2
    # and a worker process's copy (pickled) reads the same
    again = pickle.loads(pickle.dumps(released))
    np.testing.assert_array_equal(CropSampler(again, 2048, 8, seed=3).batch(7),
                                  CropSampler(kept, 2048, 8, seed=3).batch(7))


def test_a_view_taken_before_a_release_still_reads_the_same(tmp_path: Path) -> None:
    corpus = _mixed_corpus(tmp_path)
    shard_view, cache_view = corpus.wave(1)[5000:9000], corpus.wave(2)[100:50_000]
    before = np.array(shard_view), np.array(cache_view)
    assert corpus.release_pages() == RELEASABLE * 2
    np.testing.assert_array_equal(shard_view, before[0])
    np.testing.assert_array_equal(cache_view, before[1])


def test_memory_the_process_owns_and_writeable_maps_are_left_alone(tmp_path: Path) -> None:
    assert mapping_of(np.zeros(10)) is None and not release_pages(np.zeros(10))
    path = _shard(tmp_path / "w.bin", 4096)
    copy_on_write = np.memmap(path, dtype="<i2", mode="c")
    copy_on_write[0] = 7   # DONTNEED would drop this written page: never released
    assert not release_pages(copy_on_write) and copy_on_write[0] == 7
    assert release_pages(np.memmap(path, dtype="<i2", mode="r")[10:20]) == RELEASABLE


@pytest.mark.parametrize("reader", ["crops", "waves"])   # training's reads, embedding's
def test_reading_a_large_shard_through_keeps_the_mapped_pages_under_the_budget(
        tmp_path: Path, reader: str) -> None:
    if _rss_file_mib() is None or not RELEASABLE:
        pytest.skip("no RssFile in /proc/self/status, or no madvise, on this system")
    samples = 32 << 20   # a 64 MB shard, sixteen times the budget
    shard = _shard(tmp_path / "big.bin", samples)
    budget = 4 << 20
    corpus = _corpus(tmp_path, [ShardSlice(shard, 0, samples, 1.0)], [samples],
                     release_bytes=budget)
    crop = np.empty(1 << 16, np.float32)

    def read(first: int) -> None:
        if reader == "crops":
            corpus.read(0, first, crop)
        else:
            crop[:] = corpus.waves()[0][first : first + crop.shape[0]]
    read(0)
    start, most = _rss_file_mib(), 0.0
    for first in range(0, samples - crop.shape[0] + 1, crop.shape[0]):   # every sample
        read(first)
        most = max(most, (_rss_file_mib() or 0.0) - (start or 0.0))
    assert crop[-1] == np.fromfile(shard, "<i2", count=1, offset=2 * (samples - 1))[0]
    # 64 MB read: without releases the growth is the whole shard; with them at most about
    # one budget (plus what the kernel maps around the reads)
    assert most < 16, f"RssFile grew by {most:.1f} MiB reading a 64 MB shard (budget 4 MiB)"
    assert MAPPED_AROUND_BYTES < budget


def test_measuring_a_large_file_gives_its_pages_back_afterwards(tmp_path: Path) -> None:
    if _rss_file_mib() is None or not RELEASABLE:
        pytest.skip("no RssFile in /proc/self/status, or no madvise, on this system")
    samples = 32 << 20   # no stored statistics: the first crop measures all 64 MB
    shard = _shard(tmp_path / "big.bin", samples)
    corpus = _corpus(tmp_path, [ShardSlice(shard, 0, samples, 1.0)], [samples],
                     release_bytes=4 << 20, standardize=True)
    start = _rss_file_mib() or 0.0
    corpus.read(0, 1000, np.empty(4000, np.float32))
    grown = (_rss_file_mib() or 0.0) - start
    assert grown < 16, f"RssFile grew by {grown:.1f} MiB after measuring a 64 MB shard"
