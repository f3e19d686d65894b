"""data/corpus.py's bookkeeping, without decoding: the least recently used shard map is the
one closed, open_count counts file and shard maps, a subset keeps its files' labels and
sequences, and batch_stream hands the DataLoader the workers asked for and its own seed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from audiocpc.data import corpus as corpus_module
from audiocpc.data.corpus import AudioCorpus, CropSampler, ShardMaps, batch_stream


class _CountingOpener:
    def __init__(self) -> None:
        self.opened: list[str] = []

    def __call__(self, name: str) -> Any:
        def open_it() -> np.ndarray:
            self.opened.append(name)
            return np.zeros(4, np.float32)
        return open_it


def test_shard_maps_close_the_least_recently_used_shard_first() -> None:
    maps, opener = ShardMaps(limit=2), _CountingOpener()
    for name in ("a", "b", "a", "c"):   # "a" used again after "b": "b" is the one to close
        maps.get(Path(name), opener(name))
    assert len(maps) == 2
    maps.get(Path("a"), opener("a"))
    maps.get(Path("c"), opener("c"))
    assert opener.opened == ["a", "b", "c"]   # a and c stayed open
    maps.get(Path("b"), opener("b"))
    assert opener.opened == ["a", "b", "c", "b"]


class _ShardSlice:
    """A prepared corpus's entry: a view of one shard's map."""

    def __init__(self, shard: str):
        self.shard = shard

    def open(self, shards: ShardMaps) -> np.ndarray:
        return shards.get(Path(self.shard), lambda: np.zeros(100, np.float32))


def _corpus(tmp_path: Path, entries: list[Any], **fields: Any) -> AudioCorpus:
    paths = [tmp_path / f"{i}.wav" for i in range(len(entries))]
    return AudioCorpus(tmp_path, 8000, paths, entries, np.full(len(entries), 100, np.int64), **fields)


def test_open_count_adds_the_open_files_and_the_open_shards(tmp_path: Path) -> None:
    files = []
    for i in range(2):
        np.save(tmp_path / f"{i}.npy", np.zeros(100, np.float32))
        files.append(tmp_path / f"{i}.npy")
    corpus = _corpus(tmp_path, [*files, _ShardSlice("s0"), _ShardSlice("s1"), _ShardSlice("s1")])
    for index in range(5):
        corpus.wave(index)
    assert corpus.open_count == 2 + 2   # two file maps, two shards (one shared by two entries)


def test_a_subset_keeps_its_files_labels_and_sequences_in_order(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path, [tmp_path / f"{i}.npy" for i in range(5)],
                     labels=["x", "y", "x", "z", "y"], label_ids=np.array([0, 1, 0, 2, 1]),
                     classes=["x", "y", "z"], sequences=[[0, 2], [1, 4], [3]])
    part = corpus.subset([2, 1])
    assert part.paths == [tmp_path / f"{i}.wav" for i in (3, 1, 4)]
    assert part.labels == ["z", "y", "y"]
    assert part.label_ids is not None and part.label_ids.tolist() == [2, 1, 1]
    assert part.sequences == [[0], [1, 2]] and part.classes == ["x", "y", "z"]
    assert _corpus(tmp_path, [tmp_path / "0.npy"]).subset([0]).label_ids is None


def test_batch_stream_gives_the_dataloader_the_workers_asked_for(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[dict[str, Any]] = []

    class _Loader:
        def __init__(self, dataset: Any, **settings: Any):
            asked.append(settings)

        def __iter__(self) -> Any:
            return iter(())

    monkeypatch.setattr(corpus_module, "DataLoader", _Loader)
    sampler = CropSampler(_corpus(tmp_path, [tmp_path / "0.npy"]), 10, 2, seed=3)
    batch_stream(sampler, 0, 4, num_workers=3)
    stream = type("Stream", (), {"seed": 3, "sequential": True})()   # data.streaming: one reader
    batch_stream(stream, 0, 4, num_workers=3)
    assert [settings["num_workers"] for settings in asked] == [3, 1]
    assert asked[0]["prefetch_factor"] == 4


def test_starting_a_batch_stream_leaves_the_global_random_state_alone(tmp_path: Path) -> None:
    # a resumed run restores the global RNG for dropout and negatives: the loader must not draw from it
    sampler = CropSampler(_corpus(tmp_path, [tmp_path / "0.npy"]), 10, 2, seed=3)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    batch_stream(sampler, 0, 4, num_workers=0)
    assert torch.equal(torch.get_rng_state(), before)
