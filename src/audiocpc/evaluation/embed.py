"""Embeddings of audio files with a trained CPC model: one array and one manifest per split.

`embed_folder` writes, under `<out>/embeddings/<run name>/`:

- `<split>.npy`: float32 [rows, dim], one row per crop;
- `<split>.csv`: columns `row,file,start_seconds,duration_seconds,label` (file = posix path
  below the data folder, label "" = unlabelled);
- `<split>.json`: what was embedded and how (kind, crops, run, dims, sample rate, counts).

A crop is what the context network saw in training: T windows in window mode (the embedding
`context` is c at the last step), `data.full_duration` seconds in frame mode. Crop starts
are drawn from a generator seeded by (seed, file name), so they are reproducible and do not
depend on which other files are in the folder. In window mode the starts lie on the window
grid (finer only in files too short to offer enough distinct starts), so crops share their
windows: the encoder runs once per distinct window of a file and each crop's context is
computed from the shared window embeddings (the same numbers, many times faster).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from audiocpc.data.audio import relative_name
from audiocpc.config import Config, window_samples
from audiocpc.data.corpus import load_corpus
from audiocpc.errors import ConfigError
from audiocpc.data.labels import assign_labels, label_rule
from audiocpc.models import CPCModel
from audiocpc.training.estimate import format_duration
from audiocpc.training.restore import RestoredRun, restore_run
from audiocpc.data.scan import scan_folder

log = logging.getLogger("audiocpc")

EMBEDDING_KINDS: tuple[str, ...] = ("context", "context_mean", "z_mean")
MANIFEST_COLUMNS: tuple[str, ...] = ("row", "file", "start_seconds", "duration_seconds", "label")
Crops = Union[int, str]  # a number of random crops per file, or "all"
WINDOW_QUANTUM = 64  # shared window encoding pads its batches to a multiple of this
# Below this reuse (e.g. 5 crops of a long file), bookkeeping outweighs the saved encoder
# work on a GPU (measured in benchmarks/embed_speed.py), so crops are embedded one by one.
MIN_WINDOW_REUSE = 2.0


def default_crops(split: str) -> int:
    """The reference's numbers: 90 random crops per training file, 5 per test file."""
    return 90 if split == "train" else 5


def crop_length(config: Config) -> int:
    """Samples per embedded crop: T windows in window mode, full_duration in frame mode."""
    if config.model.mode == "window":
        return config.data.T * window_samples(config)
    return config.data.crop_samples


def crop_source(config: Config) -> str:
    """What sets the embedding crop's length, for messages about files shorter than it."""
    if config.model.mode == "window":
        data = config.data
        return (f"one embedding crop = data.T = {data.T} windows of {window_samples(config)} samples, "
                f"the context the model reads; set by data.T and data.full_duration / (T+k)")
    return "one embedding crop = data.full_duration"


def check_options(kind: str, crops: Crops, batch_size: int = 1) -> None:
    if kind not in EMBEDDING_KINDS:
        raise ConfigError(f"--kind: unknown embedding kind '{kind}'; choose {', '.join(EMBEDDING_KINDS)}")
    if crops != "all" and (isinstance(crops, bool) or not isinstance(crops, int) or crops < 1):
        raise ConfigError(f"--crops: expected a positive number or 'all', got {crops!r}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size: must be at least 1, got {batch_size}")


# ---------------------------------------------------------------- crop positions


def crop_starts(length: int, crop: int, crops: Crops, seed: int, key: str, grid: int = 1) -> np.ndarray:
    """Start samples of the crops of one file of `length` samples.

    `crops="all"`: consecutive, non-overlapping crops from the start (a tail shorter than
    a crop is left out). A number: that many random starts, seeded by (seed, key) so they
    are reproducible, distinct while the file has room. Starts lie on multiples of `grid`
    (the window length, so crops share windows), halved as often as needed for the file to
    offer `crops` distinct starts."""
    if length < crop:
        return np.zeros(0, dtype=np.int64)
    if crops == "all":
        return np.arange(0, length - crop + 1, crop, dtype=np.int64)
    while grid > 1 and (length - crop) // grid + 1 < crops:
        grid //= 2
    positions = (length - crop) // grid + 1
    rng = np.random.default_rng([seed, zlib.crc32(key.encode("utf-8", "surrogateescape"))])
    picks = rng.choice(positions, size=int(crops), replace=int(crops) > positions)
    return np.sort(picks).astype(np.int64) * grid


def plan_crops(lengths: Sequence[int], keys: Sequence[str], crop: int, crops: Crops, seed: int,
               grid: int = 1) -> list[np.ndarray]:
    return [crop_starts(int(n), crop, crops, seed, key, grid) for n, key in zip(lengths, keys)]


# ---------------------------------------------------------------- inference


def pool_steps(z: torch.Tensor, c: Optional[torch.Tensor], kind: str) -> torch.Tensor:
    """[B, L, dim] step features -> [B, dim] crop embeddings."""
    if kind == "z_mean":
        return z.mean(dim=1)
    assert c is not None
    return c[:, -1] if kind == "context" else c.mean(dim=1)


def _file_groups(counts: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Consecutive files whose crops together fill at least one batch (whole files only)."""
    group: list[int] = []
    total = 0
    for index, count in enumerate(counts):
        if count == 0:
            continue
        group.append(index)
        total += count
        if total >= batch_size:
            yield group
            group, total = [], 0
    if group:
        yield group


def _direct(model: CPCModel, waves: Sequence[np.ndarray], starts: Sequence[np.ndarray],
            files: list[int], crop: int, kind: str, batch_size: int, device: torch.device) -> torch.Tensor:
    """Crop by crop, in batches: every crop through the whole model."""
    rows = [(f, int(s)) for f in files for s in starts[f]]
    out = []
    for first in range(0, len(rows), batch_size):
        chunk = rows[first : first + batch_size]
        batch = torch.from_numpy(np.stack([waves[f][s : s + crop] for f, s in chunk])).to(device)
        z = model.encode(batch)
        c = None if kind == "z_mean" else model.contextualize(z)
        out.append(pool_steps(z, c, kind))
    return torch.cat(out)


def _shared(model: CPCModel, waves: Sequence[np.ndarray], starts: Sequence[np.ndarray],
            files: list[int], crop: int, kind: str, batch_size: int, device: torch.device) -> torch.Tensor:
    """Window mode: each distinct window of a file (crops on the window grid share most of
    theirs) is encoded once, and each crop's steps are gathered from those embeddings."""
    window = model.window
    assert window is not None
    steps = crop // window
    frames, gathers, offset = [], [], 0
    for f in files:
        window_starts = starts[f][:, None] + window * np.arange(steps)  # [crops, T] samples
        distinct, inverse = np.unique(window_starts, return_inverse=True)
        frames.append(np.asarray(waves[f])[distinct[:, None] + np.arange(window)])
        gathers.append(inverse.reshape(window_starts.shape) + offset)
        offset += distinct.size
    # Padded to a multiple of WINDOW_QUANTUM windows: a handful of batch shapes instead of
    # one per file group, since cuDNN builds a plan for every new shape (slow on GPUs).
    windows = np.concatenate(frames)
    windows = np.pad(windows, ((0, -len(windows) % WINDOW_QUANTUM), (0, 0)))
    z_rows = torch.cat([model.encode(chunk)[:, 0] for chunk in
                        torch.split(torch.from_numpy(windows).to(device), batch_size * steps)])
    sequences = z_rows[torch.from_numpy(np.concatenate(gathers)).to(device)]  # [crops, T, z_dim]
    out = []
    for chunk in torch.split(sequences, batch_size):
        c = None if kind == "z_mean" else model.contextualize(chunk)
        out.append(pool_steps(chunk, c, kind))
    return torch.cat(out)


def window_reuse(starts: Sequence[np.ndarray], crop: int, window: int) -> float:
    """Windows in all crops / distinct windows: how much work sharing windows saves."""
    steps = crop // window
    distinct = sum(len(np.unique(s[:, None] + window * np.arange(steps))) for s in starts if len(s))
    return sum(len(s) for s in starts) * steps / max(distinct, 1)


def _shared_is_exact(model: CPCModel, waves: Sequence[np.ndarray], starts: Sequence[np.ndarray],
                     crop: int, kind: str, device: torch.device) -> bool:
    """Whether this model encodes windows independently (so sharing changes nothing):
    checked on a few crops, because a custom encoder may normalise across a whole crop."""
    first = next(i for i, s in enumerate(starts) if len(s))
    probe = [np.asarray(s[:4]) if i == first else np.zeros(0, np.int64) for i, s in enumerate(starts)]
    a = _shared(model, waves, probe, [first], crop, kind, 4, device)
    b = _direct(model, waves, probe, [first], crop, kind, 4, device)
    return bool(torch.allclose(a, b, atol=1e-4, rtol=1e-3))


@torch.inference_mode()
def embed_crops(model: CPCModel, waves: Sequence[np.ndarray], starts: Sequence[np.ndarray],
                crop: int, kind: str = "context", batch_size: int = 64,
                shared: Optional[bool] = None, progress: bool = False,
                desc: str = "embedding") -> tuple[np.ndarray, bool]:
    """Embed the crops `waves[f][s : s + crop]` for every file f and start s in `starts[f]`.

    Returns (float32 [total crops, dim] in file-then-start order, whether the shared-window
    path was used). `shared=None` uses it when crops share enough windows to pay off and
    it gives the same numbers for this model."""
    model.eval()
    device = next(model.parameters()).device
    counts = [len(s) for s in starts]
    possible = model.window is not None and crop % model.window == 0
    if shared and not possible:
        raise ValueError("shared window encoding needs window mode (crops of whole windows)")
    if shared is None:
        shared = possible and window_reuse(starts, crop, model.window or 1) >= MIN_WINDOW_REUSE
        if shared and not _shared_is_exact(model, waves, starts, crop, kind, device):
            log.info("this model's encoder is not window-local: embedding crop by crop")
            shared = False
    run = _shared if shared else _direct
    pieces = []
    with tqdm(total=sum(1 for n in counts if n), desc=desc, unit="file", disable=not progress,
              leave=False) as bar:
        for files in _file_groups(counts, batch_size):
            pieces.append(run(model, waves, starts, files, crop, kind, batch_size, device).float().cpu())
            bar.update(len(files))
    if not pieces:
        return np.zeros((0, 0), dtype=np.float32), bool(shared)
    return torch.cat(pieces).numpy().astype(np.float32, copy=False), bool(shared)


def measure_embed_seconds(model: CPCModel, waves: Sequence[np.ndarray], starts: Sequence[np.ndarray],
                          crop: int, kind: str = "context", batch_size: int = 64,
                          shared: Optional[bool] = None) -> float:
    """Estimated seconds to embed every planned crop: the first files' crops (about one
    batch) are embedded and timed, and the time scaled to all crops."""
    import time

    counts = [len(s) for s in starts]
    total = sum(counts)
    first = next(_file_groups(counts, batch_size), [])
    if not total or not first:
        return 0.0
    probe = [s if i in first else np.zeros(0, np.int64) for i, s in enumerate(starts)]
    if shared is None:  # judge sharing on the whole plan, as the real run will
        possible = model.window is not None and crop % model.window == 0
        shared = possible and window_reuse(starts, crop, model.window or 1) >= MIN_WINDOW_REUSE
    started = time.perf_counter()
    embed_crops(model, waves, probe, crop, kind, batch_size, shared)
    seconds = time.perf_counter() - started
    return seconds * total / max(1, sum(len(probe[i]) for i in first))


def faster_crops_hint(seconds: float, crops: Crops, lengths: Sequence[int], crop: int,
                      option: str = "--crops", slow: Optional[bool] = None) -> str:
    """The option that makes a slow embedding fast: fewer random crops, or `all` (the
    consecutive crops a file holds) for clips only a few crops long. "" when not slow
    (default: over two minutes)."""
    slow = seconds > 120 if slow is None else slow
    if not slow or crops == "all" or int(crops) <= 5:
        return ""
    per_file = [n // crop for n in lengths if n >= crop]
    hints = [f"{option} 5 takes about {format_duration(seconds * 5 / int(crops))}"]
    if per_file and float(np.median(per_file)) < 5:  # short clips: all = the few crops they hold
        held = sum(per_file)
        total = len(per_file) * int(crops)
        hints.append(f"{option} all (the {held} consecutive crops the files hold, "
                     f"{float(np.mean(per_file)):.1f} per file) about {format_duration(seconds * held / total)}")
    return "; ".join(hints)


def embedding_dim(config: Config, kind: str) -> int:
    return config.model.z_dim if kind == "z_mean" else config.model.c_dim


def pool_by_file(rows: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """Average the crop rows of each file: [total crops, dim] -> [files, dim]."""
    edges = np.cumsum([0, *counts])
    return np.stack([rows[a:b].mean(axis=0) for a, b in zip(edges[:-1], edges[1:])]).astype(np.float32)


# ---------------------------------------------------------------- folders and files


@dataclass
class EmbeddingSet:
    """One split's embeddings and manifest, as written by `embed_folder`."""

    embeddings: np.ndarray  # float32 [rows, dim]
    files: list[str]  # per row: posix path below the data folder
    start_seconds: np.ndarray
    duration_seconds: np.ndarray
    labels: list[str]  # per row; "" = unlabelled
    info: dict[str, Any] = field(default_factory=dict)
    folder: Optional[Path] = None
    split: str = ""

    @property
    def array_path(self) -> Path:
        assert self.folder is not None
        return self.folder / f"{self.split}.npy"

    @property
    def manifest_path(self) -> Path:
        assert self.folder is not None
        return self.folder / f"{self.split}.csv"

    @property
    def info_path(self) -> Path:
        assert self.folder is not None
        return self.folder / f"{self.split}.json"


def _as_run(run_dir_or_model: Any, random_init: bool, device: str | torch.device) -> RestoredRun:
    if isinstance(run_dir_or_model, RestoredRun):
        found = run_dir_or_model
    elif isinstance(getattr(run_dir_or_model, "run", None), RestoredRun):  # audiocpc.load(...)
        found = run_dir_or_model.run
    else:
        return restore_run(run_dir_or_model, device=device, random_init=random_init)
    if random_init:
        raise ConfigError("random_init needs a run folder, not an already loaded model")
    return found


def _replace_atomically(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _save_array(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle: np.save would append .npy to the temp name
        np.save(handle, array)


def _write_manifest(path: Path, files: list[str], starts: np.ndarray, duration: float,
                    labels: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(MANIFEST_COLUMNS)
        for row, (name, start, label) in enumerate(zip(files, starts, labels)):
            writer.writerow([row, name, f"{start:.6f}", f"{duration:.6f}", label])


def embed_folder(run_dir_or_model: Any, data_dir: str | Path, split: str, *,
                 crops: Optional[Crops] = None, kind: str = "context", out: str | Path = "results",
                 seed: int = 0, batch_size: int = 64, label_mode: str = "auto",
                 label_pattern: Optional[str] = None, labels_csv: Optional[str | Path] = None,
                 random_init: bool = False, device: str | torch.device = "auto",
                 progress: bool = True, shared: Optional[bool] = None) -> EmbeddingSet:
    """Embed every audio file below `data_dir` (this split's folder) and write
    `<out>/embeddings/<run name>/<split>.{npy,csv,json}`. `crops` defaults to 90 for the
    train split and 5 otherwise; `random_init` embeds with the untrained baseline."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", split):
        raise ConfigError(f"--split: '{split}' must be a plain name such as train or test")
    crops = default_crops(split) if crops is None else crops
    check_options(kind, crops, batch_size)
    rule = label_rule(label_mode, label_pattern, labels_csv)  # a bad label table fails early
    run = _as_run(run_dir_or_model, random_init, device)
    config, model = run.config, run.model
    crop = crop_length(config)
    sr = config.data.desired_sr
    root = Path(data_dir)
    report = scan_folder(root, config.data, crop, progress=progress)  # cached; one-line reasons
    report.check(config.data.on_bad_file)  # nothing usable: a clear error before any work
    corpus = load_corpus(root, config.data, min_samples=crop, progress=progress,
                         crop_source=crop_source(config))
    names = [relative_name(p, root) for p in corpus.paths]
    file_labels = assign_labels(names, rule)
    grid = model.window or 1
    starts = plan_crops(corpus.lengths, names, crop, crops, seed, grid)
    waves = [corpus.wave(i) for i in range(len(corpus))]
    if progress:  # the plan, with a measured estimate, before the long part
        seconds = measure_embed_seconds(model, waves, starts, crop, kind, batch_size, shared)
        total = sum(len(x) for x in starts)
        log.info("plan: embedding %s: %d file(s) x %s crop(s) = %d crops of %.3f s with %s; about "
                 "%s (measured on one batch)", split, len(names), crops, total, crop / sr, run.name,
                 format_duration(seconds))
        hint = faster_crops_hint(seconds, crops, corpus.lengths.tolist(), crop)
        if hint:
            log.warning("embedding %d crops takes long: %s", total, hint)
    rows, used_shared = embed_crops(model, waves, starts, crop, kind, batch_size, shared, progress,
                                    desc=f"embedding {split}")
    counts = [len(s) for s in starts]
    row_files = [n for n, c in zip(names, counts) for _ in range(c)]
    row_labels = [lab for lab, c in zip(file_labels, counts) for _ in range(c)]
    start_seconds = np.concatenate(starts).astype(np.float64) / sr

    folder = Path(out) / "embeddings" / run.name
    folder.mkdir(parents=True, exist_ok=True)
    report.write(folder / f"{split}_data_report.json")
    info = {
        "run": run.name, "run_dir": os.path.abspath(run.run_dir), "random_init": random_init,
        "split": split,
        "data_dir": str(root.resolve()), "kind": kind, "crops": crops, "seed": seed,
        "rows": int(rows.shape[0]), "dim": int(rows.shape[1]), "files": len(names),
        "sample_rate": sr, "crop_samples": crop, "crop_seconds": crop / sr,
        "mode": config.model.mode, "shared_window_encoding": used_shared,
        "skipped_short": len(corpus.skipped_short), "skipped_unreadable": len(corpus.bad_files),
        "unlabelled_files": sum(1 for lab in file_labels if not lab),
        "labels": sorted({lab for lab in file_labels if lab}),
    }
    result = EmbeddingSet(rows, row_files, start_seconds, np.full(len(row_files), crop / sr),
                          row_labels, info, folder, split)
    _replace_atomically(result.array_path, lambda p: _save_array(p, rows))
    _replace_atomically(result.manifest_path, lambda p: _write_manifest(
        p, row_files, start_seconds, crop / sr, row_labels))
    _replace_atomically(result.info_path, lambda p: p.write_text(json.dumps(info, indent=2) + "\n"))
    log.info("embedded %d crops of %d file(s) -> %s (%d skipped as shorter than %.3f s)",
             len(row_files), len(names), result.array_path, len(corpus.skipped_short), crop / sr)
    return result

