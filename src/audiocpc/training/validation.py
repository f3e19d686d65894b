"""Held-out files and a fixed set of their crops, scored at the end of every epoch.

The files are chosen by the seed (the same files for every process and every resume) and
kept out of training; the crops and the negatives of the validation batches are drawn from
generators of their own, so validating never changes the training's random streams."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from audiocpc.data.corpus import AudioCorpus

MIN_FILES = 10  # below this many files (or joined sequences), all are needed for training


def validation_files(n_files: int, fraction: float, seed: int) -> np.ndarray:
    """Indices of the held-out files (or sequences): round(fraction x n), at least one,
    none for fewer than MIN_FILES or fraction 0."""
    if fraction <= 0 or n_files < MIN_FILES:
        return np.zeros(0, dtype=np.int64)
    count = min(max(1, int(round(fraction * n_files))), n_files - 1)
    order = np.random.default_rng([seed, 0x5A11D]).permutation(n_files)
    return np.sort(order[:count]).astype(np.int64)


def split_corpus(corpus: AudioCorpus, fraction: float, seed: int
                 ) -> tuple[AudioCorpus, Optional[AudioCorpus]]:
    """(training part, validation part or None), split by sequence: a file, or with
    data.join a joined group of files, is on one side only."""
    count = len(corpus.sequences)
    held = validation_files(count, fraction, seed)
    if held.size == 0:
        return corpus, None
    train = np.setdiff1d(np.arange(count), held)
    return corpus.subset(train), corpus.subset(held)


@dataclass
class ValidationSet:
    crops: torch.Tensor  # [V, S]
    labels: Optional[torch.Tensor]  # [V] class indices, for label-aware negatives
    batch_size: int
    seed: int

    @classmethod
    def draw(cls, corpus: AudioCorpus, crop_samples: int, count: int, batch_size: int,
             seed: int) -> "ValidationSet":
        """`count` crops (rounded down to whole batches, at least one batch) of the files."""
        batches = max(1, count // batch_size)
        rng = np.random.default_rng([seed, 0x5A11D, 1])
        lengths = corpus.sequence_lengths
        sequences = rng.choice(len(lengths), size=batches * batch_size, replace=True)
        crops = np.empty((sequences.size, crop_samples), dtype=np.float32)
        files = np.empty(sequences.size, dtype=np.int64)
        for row, index in enumerate(sequences):
            start = int(rng.integers(0, int(lengths[index]) - crop_samples + 1))
            corpus.read(int(index), start, crops[row])
            files[row] = corpus.file_at(int(index), start)
        labels = None if corpus.label_ids is None else torch.from_numpy(corpus.label_ids[files])
        return cls(torch.from_numpy(crops), labels, batch_size, seed)

    @torch.no_grad()
    def score(self, model: torch.nn.Module, device: torch.device,
              autocast: contextlib.AbstractContextManager) -> tuple[float, list[float]]:
        """(mean loss, mean per-step accuracy) of `model` in eval mode on these crops."""
        was_training = model.training
        model.eval()
        losses, accuracies = [], []
        # the negatives of validation come from a generator of their own
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            for first in range(0, len(self.crops), self.batch_size):
                crops = self.crops[first : first + self.batch_size].to(device)
                labels = (None if self.labels is None else
                          self.labels[first : first + self.batch_size].to(device))
                with autocast:
                    out = model(crops, labels, local_negatives=True)
                losses.append(float(out.loss))
                accuracies.append(out.step_accuracy.float().cpu())
        model.train(was_training)
        return float(np.mean(losses)), torch.stack(accuracies).mean(dim=0).tolist()
