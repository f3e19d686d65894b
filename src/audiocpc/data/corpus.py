"""Training data: a corpus of decoded files, joined into sequences, and a seeded sampler of
CPC crops.

A corpus is made by `DataReport.corpus` (data/scan.py) from one scan of the folder: the
usable files, their decoded copies in the cache, their labels, and the sequences crops are
cut from. Without data.join every file is its own sequence; with data.join=group or all,
short clips are joined (in file order, optionally with silence between them) into longer
sequences, as an index of (file, offset) segments: no audio is copied. A crop never crosses
a sequence's end, so it never mixes two groups.

The decoded copies are memory-mapped on demand through a small LRU (`open_files` maps,
default 64), so a corpus of any number of files keeps a bounded number of files open. A
prepared corpus (data/prepared.py) gives each file as a slice of a few large shards instead:
its entries open themselves through `ShardMaps`, one memory map per shard, whatever the
number of recordings. Every `release_bytes` of crops read (data/mapped.py) the corpus gives
back the pages of its open maps, so RSS stays bounded however much of a file is read.

The crops of training step s are drawn from `numpy.random.default_rng([seed, 0, s])`:
the batch of a step does not depend on what came before, so a resumed run sees exactly the
batches it would have seen. In a distributed run every rank draws the same global batch of
N x world_size crops and loads only its own slice (rows rank*N .. rank*N+N-1): ranks see
different crops, and a step's global batch is the same for any number of processes.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Optional, Protocol, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from audiocpc.data.audio import Standardized, WaveStatistics, WaveView
from audiocpc.config import DataConfig
from audiocpc.data.cache import AudioCache
from audiocpc.data.labels import UNLABELLED, LabelRule, join_group_rule
from audiocpc.data.mapped import RELEASE_BYTES, PageBudget, release_all
from audiocpc.errors import AudioReadError, NoUsableAudioError

log = logging.getLogger("audiocpc")

OPEN_FILES = 64  # decoded copies a corpus keeps memory-mapped at once (per process)
JoinMode = Literal["none", "group", "all"]


@dataclass(frozen=True)
class Join:
    """How files become the sequences crops are drawn from."""

    mode: JoinMode = "none"
    rule: Optional[LabelRule] = None  # the group of a file, for mode "group"
    gap_samples: int = 0  # silence between joined files

    @classmethod
    def from_config(cls, data: DataConfig) -> "Join":
        gap = int(round(data.join_gap_seconds * data.sample_rate))
        return cls(data.join, join_group_rule(data), gap)

    def groups(self, names: Sequence[str]) -> list[str]:
        """The group of each file ("" = none: with mode "group" such a file stays alone)."""
        if self.mode == "group":
            assert self.rule is not None
            return [self.rule.label(n) for n in names]
        return ["all" if self.mode == "all" else UNLABELLED for _ in names]

    def sequences(self, names: Sequence[str], lengths: Sequence[int]) -> list[list[int]]:
        """The files (indices into `names`, in their order) of each sequence. Sequences come
        in the order of their first file, so the plan is the same on every run."""
        if self.mode == "none":
            return [[i] for i in range(len(names))]
        members: dict[str, list[int]] = {}
        alone: list[list[int]] = []
        order: list[list[int]] = []
        for i, group in enumerate(self.groups(names)):
            if group == UNLABELLED:
                alone.append([i])
                order.append(alone[-1])
            elif group in members:
                members[group].append(i)
            else:
                members[group] = [i]
                order.append(members[group])
        return order

    def length(self, file_lengths: Sequence[int]) -> int:
        """Samples in a sequence of files of these lengths (gaps only between files)."""
        return int(sum(file_lengths)) + self.gap_samples * max(len(file_lengths) - 1, 0)


NO_JOIN = Join()


class ShardMaps:
    """The shards of a prepared corpus a process has memory-mapped: at most `limit` at once
    (least recently used closed first), each opened by the entry that needs it."""

    def __init__(self, limit: int = OPEN_FILES):
        self.limit = max(limit, 1)
        self._maps: "OrderedDict[Path, np.ndarray]" = OrderedDict()

    def get(self, shard: Path, opener: Callable[[], np.ndarray]) -> np.ndarray:
        found = self._maps.get(shard)
        if found is not None:
            self._maps.move_to_end(shard)
            return found
        opened = self._maps[shard] = opener()
        while len(self._maps) > self.limit:
            self._maps.popitem(last=False)
        return opened

    def __len__(self) -> int:
        return len(self._maps)

    def release_pages(self) -> int:
        """Give back the process's pages of every open shard map (data/mapped.py)."""
        return release_all(self._maps.values())

    def __getstate__(self) -> dict:
        return {"limit": self.limit, "_maps": OrderedDict()}  # reopened in each worker process


class SelfOpeningEntry(Protocol):
    """A decoded copy that is not a cache file (a slice of a prepared corpus's shard)."""

    def open(self, shards: ShardMaps) -> Any: ...


@dataclass
class AudioCorpus:
    """Decoded files at one sample rate, kept as cache entries and opened on demand, and
    the sequences (runs of files) that training crops are cut from."""

    root: Path
    sample_rate: int
    paths: list[Path]
    entries: list[Any]  # cache entries (Path) or SelfOpeningEntry (prepared corpora)
    lengths: np.ndarray  # samples per file
    skipped_short: list[Path] = field(default_factory=list)
    bad_files: list[tuple[Path, str]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # per file when a rule was given ("" = none)
    label_ids: Optional[np.ndarray] = None  # class index per file, when labels are given
    classes: list[str] = field(default_factory=list)
    sequences: list[list[int]] = field(default_factory=list)  # files of each sequence
    gap_samples: int = 0
    join: JoinMode = "none"
    open_files: int = OPEN_FILES
    release_bytes: int = RELEASE_BYTES  # bytes of crops read between releases of map pages
    _maps: "OrderedDict[int, np.ndarray]" = field(default_factory=OrderedDict, repr=False)

    def __post_init__(self) -> None:
        if not self.sequences:
            self.sequences = [[i] for i in range(len(self.paths))]
        # where each file starts inside its sequence, and each sequence's length
        self._offsets = []
        lengths = []
        for members in self.sequences:
            sizes = self.lengths[members].astype(np.int64)
            starts = np.concatenate([[0], np.cumsum(sizes + self.gap_samples)[:-1]])
            self._offsets.append(starts.astype(np.int64))
            lengths.append(int(sizes.sum()) + self.gap_samples * (len(members) - 1))
        self.sequence_lengths = np.asarray(lengths, dtype=np.int64)
        self._shards = ShardMaps(self.open_files)
        self._pages = PageBudget(self.release_bytes)
    standardize: bool = False  # each file scaled to zero mean, unit variance (data.standardize)
    _stats: dict[int, WaveStatistics] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.paths)

    def wave(self, index: int) -> np.ndarray:
        """File `index`, memory-mapped; at most `open_files` maps stay open (least recently
        used closed first), so the number of recordings sets no open-file ceiling."""
        entry = self.entries[index]
        if not isinstance(entry, Path):  # a shard slice: a view of a shared map, nothing to keep
            return entry.open(self._shards)
        found = self._maps.get(index)
        if found is not None:
            self._maps.move_to_end(index)
            return found
        wave = self._open(index)
        self._maps[index] = wave
        while len(self._maps) > max(self.open_files, 1):
            self._maps.popitem(last=False)
        return wave

    def waves(self) -> "FileWaves":
        """Every file's waveform as a sequence that opens each file only when indexed."""
        return FileWaves(self)

    @property
    def open_count(self) -> int:
        return len(self._maps) + len(self._shards)

    def recording(self, index: int) -> Any:
        """File `index` as the model sees it, to slice crops from: the decoded audio, or with
        data.standardize a `Standardized` view of it (scaled as a whole). The statistics are
        those stored with a prepared corpus's entry, or else measured once per file (every
        sample read) and kept; the memory map is not kept."""
        wave = self.wave(index)
        if not self.standardize:
            return wave
        if index not in self._stats:
            stored = getattr(self.entries[index], "statistics", None)
            view = Standardized(wave, stored)
            self._stats[index] = view.statistics
            if stored is None:  # measuring read every sample
                self._charge(wave.size * wave.dtype.itemsize)
            return view
        return Standardized(wave, self._stats[index])

    def _open(self, index: int) -> np.ndarray:
        try:
            return np.load(self.entries[index], mmap_mode="r")
        except (OSError, ValueError):  # the decoded copy is gone (cache cleared): decode again
            path = self.paths[index]
            try:
                wave = AudioCache(self.entries[index].parent.parent).load(path, self.sample_rate)
            except AudioReadError as exc:
                raise NoUsableAudioError(
                    f"{path}: its decoded copy in the cache vanished after the data was loaded, "
                    f"and the file cannot be decoded again ({exc.reason}). Run again (with "
                    "--resume to continue from the last checkpoint).") from None
            if wave.shape[0] != self.lengths[index]:
                raise NoUsableAudioError(f"{path}: changed while in use ({wave.shape[0]} samples "
                                         f"instead of {self.lengths[index]}); run again")
            return wave

    def read(self, sequence: int, start: int, out: np.ndarray) -> None:
        """Fill `out` with samples [start, start + len(out)) of `sequence` (silence in gaps)."""
        members, offsets = self.sequences[sequence], self._offsets[sequence]
        end = start + out.shape[0]
        self._charge(out.nbytes)
        if len(members) == 1:
            out[:] = self.recording(members[0])[start:end]
            return
        out[:] = 0.0
        j = int(np.searchsorted(offsets, start, side="right")) - 1
        while j < len(members) and offsets[j] < end:
            file, begin = members[j], int(offsets[j])
            a, b = max(start, begin), min(end, begin + int(self.lengths[file]))
            if b > a:
                out[a - start : b - start] = self.recording(file)[a - begin : b - begin]
            j += 1

    def release_pages(self) -> int:
        """Give back the process's pages of the open maps (cache files and shards): RSS
        drops, the maps and any views of them stay valid; how many maps were released."""
        return release_all(self._maps.values()) + self._shards.release_pages()

    def _charge(self, nbytes: int) -> None:
        if self._pages.charge(nbytes):
            self.release_pages()

    def file_at(self, sequence: int, position: int) -> int:
        """The file that sample `position` of `sequence` falls in (a gap: the file before it)."""
        offsets = self._offsets[sequence]
        return self.sequences[sequence][int(np.searchsorted(offsets, position, side="right")) - 1]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_maps"] = OrderedDict()  # reopened in each worker process instead of copied
        return state

    @property
    def total_seconds(self) -> float:
        return float(self.lengths.sum()) / self.sample_rate

    def subset(self, sequences: Sequence[int] | np.ndarray) -> "AudioCorpus":
        """The corpus of the sequences at `sequences` (their files, in order): e.g. the
        training or the validation part. Without join a sequence is one file."""
        files = [f for s in sequences for f in self.sequences[int(s)]]
        index = {f: i for i, f in enumerate(files)}
        return AudioCorpus(
            self.root, self.sample_rate, [self.paths[f] for f in files],
            [self.entries[f] for f in files], self.lengths[files].copy(),
            labels=[self.labels[f] for f in files] if self.labels else [],
            label_ids=None if self.label_ids is None else self.label_ids[files].copy(),
            classes=list(self.classes),
            sequences=[[index[f] for f in self.sequences[int(s)]] for s in sequences],
            gap_samples=self.gap_samples, join=self.join, open_files=self.open_files,
            release_bytes=self.release_bytes, standardize=self.standardize)


class FileWaves(Sequence[np.ndarray]):
    """corpus.recording(i) (each file as the model sees it) as a read-only sequence, for code
    that indexes waveforms by file; files are opened only when indexed, and what is sliced
    from them counts towards the corpus's releases of map pages like its crops."""

    def __init__(self, corpus: AudioCorpus):
        self.corpus = corpus

    def __len__(self) -> int:
        return len(self.corpus)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(len(self.corpus))[index]]
        return _CountedReads(self.corpus.recording(int(index)), self.corpus)


class _CountedReads(WaveView):
    """A recording whose slices are charged to its corpus's page budget (embedding slices
    files through `FileWaves`, not `AudioCorpus.read`)."""

    def __init__(self, wave: Any, corpus: AudioCorpus):
        self.base, self.corpus = wave, corpus

    def __getitem__(self, index: Any) -> np.ndarray:  # any numpy index
        piece = np.asarray(self.base[index])
        self.corpus._charge(piece.nbytes)
        return piece


class CropSampler:
    """Batches of `batch_size` random crops of `crop_samples`, seeded per step."""

    def __init__(self, corpus: AudioCorpus, crop_samples: int, batch_size: int, seed: int,
                 rank: int = 0, world_size: Optional[int] = None):
        self.corpus, self.crop_samples, self.batch_size = corpus, crop_samples, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size

    def batch(self, step: int) -> np.ndarray:
        return self.batch_with_labels(step)[0]

    def batch_with_labels(self, step: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """The crops of `step` and the class indices of the files they start in (None
        without labels). Each crop lies inside one sequence."""
        # With world_size: rank r keeps rows r*N.. of one global batch drawn alike on every
        # rank (the training loop's way). Without: a stream of its own per rank.
        shared = self.world_size is not None
        rng = np.random.default_rng([self.seed, 0 if shared else self.rank, step])
        rows = self.batch_size * (self.world_size or 1)
        first = self.rank * self.batch_size if shared else 0
        lengths = self.corpus.sequence_lengths
        count = len(lengths)
        sequences = rng.choice(count, size=rows, replace=count < rows)
        ids = self.corpus.label_ids
        crops = np.empty((self.batch_size, self.crop_samples), dtype=np.float32)
        labels = None if ids is None else np.empty(self.batch_size, dtype=np.int64)
        for row, index in enumerate(sequences):
            start = int(rng.integers(0, int(lengths[index]) - self.crop_samples + 1))
            if first <= row < first + self.batch_size:
                self.corpus.read(int(index), start, crops[row - first])
                if labels is not None and ids is not None:
                    labels[row - first] = ids[self.corpus.file_at(int(index), start)]
        return crops, labels


class _StepStream(IterableDataset):
    """Yields (step, crops, labels or None) for steps [start, stop); worker w of W takes steps w, w+W, ...,
    which the DataLoader interleaves back into order."""

    def __init__(self, sampler: CropSampler, start: int, stop: int):
        self.sampler, self.start, self.stop = sampler, start, stop

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor, Optional[torch.Tensor]]]:
        info = get_worker_info()
        offset, stride = (info.id, info.num_workers) if info else (0, 1)
        for step in range(self.start + offset, self.stop, stride):
            crops, labels = self.sampler.batch_with_labels(step)
            yield step, torch.from_numpy(crops), None if labels is None else torch.from_numpy(labels)


def batch_stream(sampler: Any, start: int, stop: int, num_workers: int = 0,
                 pin_memory: bool = False) -> Iterator[tuple[int, torch.Tensor, Optional[torch.Tensor]]]:
    """(step, crops, labels) for steps [start, stop), loaded in `num_workers` background processes."""
    if getattr(sampler, "sequential", False):  # a stream (data.streaming): one reader, in order
        num_workers = min(num_workers, 1)
    loader = DataLoader(_StepStream(sampler, start, stop), batch_size=None,
                        num_workers=num_workers, pin_memory=pin_memory,
                        prefetch_factor=4 if num_workers else None,
                        persistent_workers=False,
                        # its own generator: creating the iterator must not consume the global
                        # RNG, whose state a resumed run restores for dropout and negatives
                        generator=torch.Generator().manual_seed(sampler.seed))
    return iter(loader)
