"""Training data: a corpus of decoded files and a seeded sampler of CPC crops.

`load_corpus` decodes every file once into the cache (in parallel, with a progress bar),
skips files that are unreadable or shorter than a crop with one warning each kind, and
keeps only the paths of memory-mapped arrays, so worker processes open them cheaply.

The crops of training step s are drawn from `numpy.random.default_rng([seed, 0, s])`:
the batch of a step does not depend on what came before, so a resumed run sees exactly the
batches it would have seen. In a distributed run every rank draws the same global batch of
N x world_size crops and loads only its own slice (rows rank*N .. rank*N+N-1): ranks see
different crops, and a step's global batch is the same for any number of processes.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm.auto import tqdm

from audiocpc.data.audio import audio_info, discover_audio_files, read_failure_reason, relative_name
from audiocpc.data.cache import AudioCache
from audiocpc.config import DataConfig
from audiocpc.errors import AudioReadError, NoUsableAudioError

log = logging.getLogger("audiocpc")

SHOWN_NAMES = 5  # how many file names a warning lists


@dataclass
class AudioCorpus:
    """Decoded files at one sample rate, kept as memory-mapped cache entries."""

    root: Path
    sample_rate: int
    paths: list[Path]
    entries: list[Path]
    lengths: np.ndarray  # samples per file
    skipped_short: list[Path] = field(default_factory=list)
    bad_files: list[tuple[Path, str]] = field(default_factory=list)
    label_ids: Optional[np.ndarray] = None  # class index per file, when data.labels is set
    classes: list[str] = field(default_factory=list)
    _arrays: Optional[list[np.ndarray]] = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.paths)

    def wave(self, index: int) -> np.ndarray:
        if self._arrays is None:
            self._arrays = [self._open(i) for i in range(len(self.entries))]
        return self._arrays[index]

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

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_arrays"] = None  # reopened in each worker process instead of copied
        return state

    @property
    def total_seconds(self) -> float:
        return float(self.lengths.sum()) / self.sample_rate


def _names(paths: list[Path], root: Path) -> str:
    shown = ", ".join(relative_name(p, root) for p in paths[:SHOWN_NAMES])
    return shown + (f", ... (+{len(paths) - SHOWN_NAMES} more)" if len(paths) > SHOWN_NAMES else "")


def _sample_rate(path: Path) -> Optional[int]:
    """The file's own rate, or None if it vanished since it was decoded."""
    try:
        return audio_info(path).samplerate
    except AudioReadError:
        return None


def load_corpus(root: str | Path, data: DataConfig, min_samples: int,
                progress: bool = True, crop_source: str = "data.full_duration") -> AudioCorpus:
    """Discover, decode (once, cached) and filter the audio files below `root`.
    `crop_source` names what sets `min_samples` in messages (embedding crops in window mode
    are T windows, shorter than a training crop)."""
    root = Path(root)
    paths = discover_audio_files(root, data.extensions)
    if not paths:
        raise NoUsableAudioError(
            f"no audio files with extensions {', '.join(data.extensions)} found below {root}"
            " (set data.extensions to the formats you have)")
    cache = AudioCache(data.cache_dir)
    sr = data.desired_sr

    def decode(path: Path) -> tuple[Path, Optional[Path], int, Optional[str]]:
        try:
            wave = cache.load(path, sr)
            return path, cache.entry(path, sr), int(wave.shape[0]), None
        except AudioReadError as exc:
            return path, None, 0, exc.reason
        except OSError as exc:  # the file vanished or cannot be stat'ed
            return path, None, 0, read_failure_reason(exc)

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        results = list(tqdm(pool.map(decode, paths), total=len(paths), desc="decoding audio",
                            unit="file", disable=not progress, leave=False))

    kept, entries, lengths, short, bad = [], [], [], [], []
    for path, entry, length, reason in results:
        if reason is not None:
            bad.append((path, reason))
        elif length < min_samples:
            short.append(path)
        else:
            kept.append(path)
            entries.append(entry)
            lengths.append(length)
    if bad:
        detail = "; ".join(f"{relative_name(p, root)}: {r}" for p, r in bad[:SHOWN_NAMES])
        if data.on_bad_file == "error":
            raise NoUsableAudioError(f"{len(bad)} unreadable audio file(s): {detail} "
                                     "(set data.on_bad_file=skip to train on the others)")
        log.warning("skipped %d unreadable file(s): %s", len(bad), detail)
    if short:
        log.warning("skipped %d file(s) shorter than %.3f s (%s), %d of %d: %s",
                    len(short), min_samples / sr, crop_source, len(short), len(results),
                    _names(short, root))
    if data.original_sr is not None:
        other = [p for p in kept[:200] if _sample_rate(p) not in (None, data.original_sr)]
        if other:
            log.warning("%d file(s) are not at data.original_sr=%d Hz (they are resampled from "
                        "their real rate anyway): %s", len(other), data.original_sr,
                        _names(other, root))
    if not kept:
        longest, longest_path = max(((n, p) for p, _, n, r in results if r is None),
                                    default=(0, None))
        named = f" ({relative_name(longest_path, root)})" if longest_path else ""
        raise NoUsableAudioError(
            f"no usable audio below {root}: {len(short)} file(s) too short, {len(bad)} unreadable. "
            f"A crop needs {min_samples / sr:.3f} s ({crop_source}); the longest file has "
            f"{longest / sr:.3f} s{named}. Shorten the crop or add longer files.")
    corpus = AudioCorpus(root, sr, kept, entries, np.asarray(lengths, dtype=np.int64), short, bad)
    if data.labels != "none":
        corpus.classes, corpus.label_ids = _file_labels(kept, root, data)
    return corpus


def _file_labels(paths: list[Path], root: Path, data: DataConfig) -> tuple[list[str], np.ndarray]:
    """Class names and one class index per file, for the label-aware negative policies."""
    from audiocpc.data.labels import assign_labels, label_rule

    rule = label_rule(data.labels, data.label_pattern, data.labels_csv)
    labels = assign_labels([relative_name(p, root) for p in paths], rule)
    classes = sorted(set(labels))
    index = {name: i for i, name in enumerate(classes)}
    log.info("labels for negatives (%s): %d classes", data.labels, len(classes))
    return classes, np.array([index[name] for name in labels], dtype=np.int64)


class CropSampler:
    """Batches of `batch_size` random crops of `crop_samples`, seeded per step."""

    def __init__(self, corpus: AudioCorpus, crop_samples: int, batch_size: int, seed: int,
                 rank: int = 0, world_size: Optional[int] = None):
        self.corpus, self.crop_samples, self.batch_size = corpus, crop_samples, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size

    def batch(self, step: int) -> np.ndarray:
        return self.batch_with_labels(step)[0]

    def batch_with_labels(self, step: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """The crops of `step` and their files' class indices (None without data.labels)."""
        # With world_size: rank r keeps rows r*N.. of one global batch drawn alike on every
        # rank (the training loop's way). Without: a stream of its own per rank.
        shared = self.world_size is not None
        rng = np.random.default_rng([self.seed, 0 if shared else self.rank, step])
        rows = self.batch_size * (self.world_size or 1)
        first = self.rank * self.batch_size if shared else 0
        n_files = len(self.corpus)
        files = rng.choice(n_files, size=rows, replace=n_files < rows)
        crops = np.empty((self.batch_size, self.crop_samples), dtype=np.float32)
        for row, index in enumerate(files):
            start = int(rng.integers(0, int(self.corpus.lengths[index]) - self.crop_samples + 1))
            if first <= row < first + self.batch_size:
                crops[row - first] = self.corpus.wave(int(index))[start : start + self.crop_samples]
        ids = self.corpus.label_ids
        labels = None if ids is None else ids[files[first : first + self.batch_size]]
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


def batch_stream(sampler: CropSampler, start: int, stop: int, num_workers: int = 0,
                 pin_memory: bool = False) -> Iterator[tuple[int, torch.Tensor, Optional[torch.Tensor]]]:
    """(step, crops, labels) for steps [start, stop), loaded in `num_workers` background processes."""
    loader = DataLoader(_StepStream(sampler, start, stop), batch_size=None,
                        num_workers=num_workers, pin_memory=pin_memory,
                        prefetch_factor=4 if num_workers else None,
                        persistent_workers=False,
                        # its own generator: creating the iterator must not consume the global
                        # RNG, whose state a resumed run restores for dropout and negatives
                        generator=torch.Generator().manual_seed(sampler.seed))
    return iter(loader)
