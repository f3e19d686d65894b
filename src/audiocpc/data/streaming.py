"""Streaming mode (data.streaming: true): training crops from a prepared corpus read shard by
shard, front to back, as object storage likes it, instead of by random access.

The stream is a pure function of the manifest (each file's shard, offset and length), the
seed and the step, never of the audio:

- pass p reads the shards in the order `default_rng([seed, 1, p]).permutation`, each shard's
  files in their order in it (increasing offset: one forward read per shard);
- a file of L samples gives floor(L / crop) non-overlapping crops, from a phase drawn from
  `default_rng([seed, 2, p])`: every file (every crop-length stretch of audio) once per pass;
- the crops go through a shuffle buffer of `data.shuffle_buffer` crops (at most one pass's
  worth): once it is full, each crop out is a seeded random slot (`default_rng([seed, 3])`),
  refilled by the next crop read;
- step s's batch is crops s x rows ... (s + 1) x rows - 1 of that shuffled stream (rows =
  data.N x accumulate x processes; each process keeps its own N, as in random access).

Resume is therefore exact: at step s the stream is replayed on the manifest alone (no audio,
microseconds a crop) to find which crops are in the buffer, and reading resumes at the shard
and byte offset of the oldest file still holding a crop there (`resume_point`): those few
files are read again, nothing before them. What is weaker than random access: a step's batch
depends on every step before it (changing data.N, the number of processes or the buffer
changes the stream from step 0, so --resume refuses such changes, as it does for data.N), crops
come from a window of the corpus (the buffer) rather than all of it, files are weighted by their
length rather than drawn uniformly, and every process reads the whole stream. Resume on a
corpus whose manifest changed (prepared again) is not detected: the replay follows the new one.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import IO, Any, Iterator, Optional

import numpy as np

from audiocpc.data.audio import Standardized, WaveView
from audiocpc.data.corpus import AudioCorpus, CropSampler
from audiocpc.data.prepared import ScaledInt16
from audiocpc.data.webdataset import read_samples
from audiocpc.errors import ConfigError, NoUsableAudioError

log = logging.getLogger("audiocpc")

# files up to this many samples (8 MB of int16) are read whole; longer ones span by span
WHOLE_FILE_SAMPLES = 1 << 22


@dataclass(frozen=True)
class Crop:
    """One crop of the stream: the `serial`-th read, from `file` at sample `start`."""

    serial: int
    pass_number: int
    file: int
    start: int


class ShardReader:
    """Reads files' int16 samples from their shards, keeping one shard open and reading it
    forward; `reads` lists (shard, byte offset) of every file read, for the record."""

    def __init__(self) -> None:
        self.shard: Any = None
        self.handle: Optional[IO[bytes]] = None
        self.reads: list[tuple[str, int]] = []

    def read(self, entry: Any) -> np.ndarray:
        """A whole file's samples."""
        self.reads.append((str(entry.shard), 2 * entry.offset))
        return self.read_span(entry, 0, entry.length)

    def samples(self, entry: Any) -> "ShardSpans":
        """A file's samples read span by span when sliced (a long file is never held whole)."""
        self.reads.append((str(entry.shard), 2 * entry.offset))
        return ShardSpans(self, entry)

    def read_span(self, entry: Any, start: int, length: int) -> np.ndarray:
        """`length` samples of a file from its sample `start`."""
        if entry.shard != self.shard:
            self.close()
            location = getattr(entry, "location", None)  # a remote slice; a local one is a Path
            self.handle = open(entry.shard, "rb") if location is None else location.open(entry.shard)
            self.shard = entry.shard
        assert self.handle is not None
        try:
            return read_samples(self.handle, entry.offset + start, length)
        except Exception as exc:  # OSError locally; fsspec back ends raise their own
            raise NoUsableAudioError(
                f"{entry.shard}: cannot read {length} samples at byte "
                f"{2 * (entry.offset + start)} ({exc}); check the corpus (or the connection), "
                "then run again with --resume") from None

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
        self.handle, self.shard = None, None


class ShardSpans:
    """One file's int16 samples in its shard, sliced like an array: each slice one read."""

    def __init__(self, reader: ShardReader, entry: Any):
        self.reader, self.entry = reader, entry
        self.shape = (int(entry.length),)

    def __getitem__(self, index: slice) -> np.ndarray:
        start, stop, step = index.indices(self.shape[0])
        assert step == 1, "read in spans"
        return self.reader.read_span(self.entry, start, max(stop - start, 0))


class StreamSampler:
    """Batches of crops of a prepared corpus read in streaming order (module docstring),
    with the interface of `CropSampler`: `batch_with_labels(step)` for any step, cheapest for
    the steps in order (one loader process reads them: `sequential`)."""

    sequential = True  # batch_stream gives it one loader process, the steps in order

    def __init__(self, corpus: AudioCorpus, crop_samples: int, batch_size: int, seed: int,
                 rank: int = 0, world_size: Optional[int] = None, buffer: int = 1000):
        if corpus.join != "none":
            raise ConfigError("data.streaming: streaming reads each file on its own; set "
                              "data.join=none")
        folder_files = [p for p, e in zip(corpus.paths, corpus.entries) if not hasattr(e, "shard")]
        if folder_files:
            raise ConfigError(
                f"data.streaming: {corpus.root} is a folder of audio files; streaming reads a "
                "prepared corpus (audiocpc prepare DATA --out CORPUS --format webdataset), or "
                "set data.streaming=false")
        self.corpus, self.crop_samples, self.batch_size = corpus, crop_samples, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        shards: dict[str, list[int]] = {}
        for index, entry in enumerate(corpus.entries):
            shards.setdefault(str(entry.shard), []).append(index)
        self.shard_names = sorted(shards)
        self.shard_files = [sorted(shards[name], key=lambda i: corpus.entries[i].offset)
                            for name in self.shard_names]
        self.crops_per_file = np.maximum(corpus.lengths // crop_samples, 0)
        self.crops_per_pass = int(self.crops_per_file.sum())
        if self.crops_per_pass == 0:
            raise NoUsableAudioError(f"data.streaming: no file of {corpus.root} holds a "
                                     f"{crop_samples}-sample crop")
        self.buffer_size = max(1, min(buffer, self.crops_per_pass))
        self.reader = ShardReader()
        self._stream: Optional[_Stream] = None

    @property
    def rows(self) -> int:
        """Crops the stream gives per step (every process's batch)."""
        return self.batch_size * (self.world_size or 1)

    def crops(self) -> Iterator[Crop]:
        """The crops in the order they are read (before the shuffle buffer), pass after pass."""
        serial = 0
        lengths = self.corpus.lengths
        for pass_number in itertools.count():
            order = np.random.default_rng([self.seed, 1, pass_number]).permutation(len(self.shard_names))
            phases = np.random.default_rng([self.seed, 2, pass_number])
            for shard in order:
                for file in self.shard_files[int(shard)]:
                    count = int(self.crops_per_file[file])
                    if count == 0:
                        continue
                    slack = int(lengths[file]) - count * self.crop_samples
                    phase = int(phases.integers(0, slack + 1))
                    for i in range(count):
                        yield Crop(serial, pass_number, file, phase + i * self.crop_samples)
                        serial += 1

    def stream(self, first_crop: int = 0, audio: bool = True) -> "_Stream":
        """The shuffled stream from its `first_crop`-th crop on (replayed on the manifest to
        there; with `audio`, the buffer's crops are then read)."""
        stream = _Stream(self)
        while stream.emitted < first_crop:
            stream.emit()
        if audio:
            stream.read_buffer()
        return stream

    def resume_point(self, step: int) -> tuple[str, int, int]:
        """(shard, byte offset, pass) where reading starts when training resumes at `step`:
        the file of the oldest crop still in the shuffle buffer then."""
        return self._point(self.stream(step * self.rows, audio=False))

    def _point(self, stream: "_Stream") -> tuple[str, int, int]:
        oldest = min(stream.buffer, key=lambda c: c.serial)
        entry = self.corpus.entries[oldest.file]
        return str(entry.shard), 2 * int(entry.offset), oldest.pass_number

    def batch(self, step: int) -> np.ndarray:
        return self.batch_with_labels(step)[0]

    def batch_with_labels(self, step: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
        target = step * self.rows
        if self._stream is None or self._stream.emitted != target:
            self._stream = self.stream(target, audio=False)
            shard, offset, pass_number = self._point(self._stream)
            self._stream.read_buffer()
            if target:
                log.info("streaming: step %d reads on from %s, byte %d (pass %d); %d buffered "
                         "crops read again", step, shard, offset, pass_number, self.buffer_size)
        first = self.rank * self.batch_size if self.world_size is not None else 0
        ids = self.corpus.label_ids
        crops = np.empty((self.batch_size, self.crop_samples), dtype=np.float32)
        labels = None if ids is None else np.empty(self.batch_size, dtype=np.int64)
        for row in range(self.rows):
            crop, samples = self._stream.emit()
            if first <= row < first + self.batch_size:
                crops[row - first] = samples
                if labels is not None and ids is not None:
                    labels[row - first] = ids[crop.file]
        return crops, labels

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_stream"], state["reader"] = None, ShardReader()  # a generator and an open file
        return state


class _Stream:
    """The shuffle buffer over `sampler.crops()`; reads audio once `reading` is on."""

    def __init__(self, sampler: StreamSampler):
        self.sampler = sampler
        self.source = sampler.crops()
        self.pick = np.random.default_rng([sampler.seed, 3])
        self.buffer: list[Crop] = [next(self.source) for _ in range(sampler.buffer_size)]
        self.samples: list[Optional[np.ndarray]] = [None] * sampler.buffer_size
        self.emitted = 0
        self.reading = False
        self._file: Optional[int] = None
        self._wave: Optional[WaveView] = None

    def read_buffer(self) -> None:
        """Read the audio of the crops in the buffer (oldest first), and of every crop after."""
        for slot in sorted(range(len(self.buffer)), key=lambda s: self.buffer[s].serial):
            self.samples[slot] = self._cut(self.buffer[slot])
        self.reading = True

    def emit(self) -> tuple[Crop, Optional[np.ndarray]]:
        slot = int(self.pick.integers(len(self.buffer)))
        out = self.buffer[slot], self.samples[slot]
        incoming = next(self.source)
        self.buffer[slot] = incoming
        self.samples[slot] = self._cut(incoming) if self.reading else None
        self.emitted += 1
        return out

    def _cut(self, crop: Crop) -> np.ndarray:
        if crop.file != self._file:  # a file's crops are read in a row
            corpus = self.sampler.corpus
            entry = corpus.entries[crop.file]
            # a short file is read once, whole (int16); a long one crop by crop, forward (after
            # measuring it in blocks, if its manifest row has no statistics): memory stays
            # bounded whatever the file's length
            samples: Any = (self.sampler.reader.read(entry) if entry.length <= WHOLE_FILE_SAMPLES
                            else self.sampler.reader.samples(entry))
            wave: Any = ScaledInt16(samples, entry.scale)  # a lazy view, sliced like the array
            self._wave = (Standardized(wave, getattr(entry, "statistics", None))
                          if corpus.standardize else wave)
            self._file = crop.file
        assert self._wave is not None
        return np.array(self._wave[crop.start : crop.start + self.sampler.crop_samples],
                        dtype=np.float32)


def training_sampler(corpus: AudioCorpus, crop_samples: int, batch_size: int, seed: int,
                     rank: int, world_size: Optional[int], streaming: bool,
                     buffer: int) -> CropSampler | StreamSampler:
    """The sampler training draws its batches from: random access, or data.streaming."""
    if streaming:
        return StreamSampler(corpus, crop_samples, batch_size, seed, rank, world_size, buffer)
    return CropSampler(corpus, crop_samples, batch_size, seed, rank, world_size)
