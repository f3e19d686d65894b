"""Embeddings of audio files with a trained CPC model: one array and one manifest per split.

`embed_folder` writes, into the embeddings folder it is given (see evaluation/store.py):

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

import logging
import os
import re
import zlib
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from audiocpc.data.audio import discover_audio_files, relative_name
from audiocpc.config import Config, window_samples
from audiocpc.data.corpus import NO_JOIN
from audiocpc.errors import ConfigError
from audiocpc.evaluation.store import MANIFEST_COLUMNS, EmbeddingSplit  # noqa: F401 (re-exported)
from audiocpc.fileio import files_fingerprint, normalised_json, sha256_file
from audiocpc.data.labels import label_rule
from audiocpc.models import CPCModel
from audiocpc.models.hidden import POOLS, pool_frames
from audiocpc.training.estimate import format_duration
from audiocpc.training.restore import RestoredRun, restore_run
from audiocpc.data.prepared import is_prepared, manifest_files, open_data

log = logging.getLogger("audiocpc")

# context: c at the crop's last step (the reference's); context_mean, z_mean: c's or z's frames
# pooled; zc: z and c side by side, pooled (the best on the real-audio suite, docs/suite.md)
EMBEDDING_KINDS: tuple[str, ...] = ("context", "context_mean", "z_mean", "zc")
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


def check_options(kind: str, crops: Crops, batch_size: int = 1, layer: Optional[str] = None,
                  pool: str = "mean") -> None:
    if pool not in POOLS:
        raise ConfigError(f"--pool: unknown pooling '{pool}'; choose {', '.join(POOLS)}")
    if layer is None and kind == "context" and pool != "mean":
        raise ConfigError("--pool: the 'context' embedding is c at the crop's last step; pooling applies "
                          "to --kind context_mean or z_mean, or to a --layer")
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
    while grid > 1 and (length - crop) // grid + 1 < int(crops):  # a number here (check_options)
        grid //= 2
    positions = (length - crop) // grid + 1
    rng = np.random.default_rng([seed, zlib.crc32(key.encode("utf-8", "surrogateescape"))])
    picks = rng.choice(positions, size=int(crops), replace=int(crops) > positions)
    return np.sort(picks).astype(np.int64) * grid


def plan_crops(lengths: Sequence[int] | np.ndarray, keys: Sequence[str], crop: int, crops: Crops, seed: int,
               grid: int = 1) -> list[np.ndarray]:
    return [crop_starts(int(n), crop, crops, seed, key, grid) for n, key in zip(lengths, keys)]


# ---------------------------------------------------------------- inference


def pool_steps(z: torch.Tensor, c: Optional[torch.Tensor], kind: str, pool: str = "mean") -> torch.Tensor:
    """[B, L, dim] step features -> [B, dim] crop embeddings ([B, 2 dim] for meanstd / meanmax)."""
    if kind == "z_mean":
        return pool_frames(z, pool)
    assert c is not None
    if kind == "zc":
        return pool_frames(torch.cat([z[:, : c.shape[1]], c], dim=-1), pool)
    return c[:, -1] if kind == "context" else pool_frames(c, pool)


def layer_names(model: CPCModel, crop: int) -> list[str]:
    """The names `--layer` accepts for this model (see CPCModel.hidden_states)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        return model.hidden_states(torch.zeros(1, crop, device=device)).names


def check_layer(model: CPCModel, crop: int, layer: Optional[str]) -> None:
    if layer is not None and layer not in (names := layer_names(model, crop)):
        raise ConfigError(f"--layer: no layer named '{layer}'; this model's layers are: {', '.join(names)}")


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
            files: list[int], crop: int, kind: str, batch_size: int, device: torch.device,
            layer: Optional[str] = None, pool: str = "mean") -> torch.Tensor:
    """Crop by crop, in batches: every crop through the whole model (or up to `layer`)."""
    rows = [(f, int(s)) for f in files for s in starts[f]]
    out = []
    for first in range(0, len(rows), batch_size):
        chunk = rows[first : first + batch_size]
        batch = torch.from_numpy(np.stack([waves[f][s : s + crop] for f, s in chunk])).to(device)
        if layer is not None:
            out.append(pool_frames(model.hidden_states(batch)[layer], pool))
            continue
        z = model.encode(batch)
        c = None if kind == "z_mean" else model.contextualize(z)
        out.append(pool_steps(z, c, kind, pool))
    return torch.cat(out)


def _shared(model: CPCModel, waves: Sequence[np.ndarray], starts: Sequence[np.ndarray],
            files: list[int], crop: int, kind: str, batch_size: int, device: torch.device,
            pool: str = "mean") -> torch.Tensor:
    """Window mode: each distinct window of a file (crops on the window grid share most of
    theirs) is encoded once, and each crop's steps are gathered from those embeddings."""
    window = model.window
    assert window is not None
    steps = crop // window
    frames, gathers, offset = [], [], 0
    for f in files:
        window_starts = starts[f][:, None] + window * np.arange(steps)  # [crops, T] samples
        distinct, inverse = np.unique(window_starts, return_inverse=True)
        frames.append(np.asarray(waves[f][distinct[:, None] + np.arange(window)]))
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
        out.append(pool_steps(chunk, c, kind, pool))
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
                desc: str = "embedding", layer: Optional[str] = None,
                pool: str = "mean") -> tuple[np.ndarray, bool]:
    """Embed the crops `waves[f][s : s + crop]` for every file f and start s in `starts[f]`.

    Returns (float32 [total crops, dim] in file-then-start order, whether the shared-window
    path was used). `shared=None` uses it when crops share enough windows to pay off and
    it gives the same numbers for this model. `layer` (a name from `CPCModel.hidden_states`)
    embeds that layer's frames of each crop pooled with `pool`, crop by crop."""
    model.eval()
    device = next(model.parameters()).device
    counts = [len(s) for s in starts]
    possible = model.window is not None and crop % model.window == 0 and layer is None
    if shared and not possible:
        raise ValueError("shared window encoding needs window mode (crops of whole windows) and no layer")
    if shared is None:
        shared = possible and window_reuse(starts, crop, model.window or 1) >= MIN_WINDOW_REUSE
        if shared and not _shared_is_exact(model, waves, starts, crop, kind, device):
            log.info("this model's encoder is not window-local: embedding crop by crop")
            shared = False
    def run(files: list[int]) -> torch.Tensor:
        if shared:
            return _shared(model, waves, starts, files, crop, kind, batch_size, device, pool=pool)
        return _direct(model, waves, starts, files, crop, kind, batch_size, device, layer=layer, pool=pool)

    pieces = []
    with tqdm(total=sum(1 for n in counts if n), desc=desc, unit="file", disable=not progress,
              leave=False) as bar:
        for files in _file_groups(counts, batch_size):
            pieces.append(run(files).float().cpu())
            bar.update(len(files))
    if not pieces:
        return np.zeros((0, 0), dtype=np.float32), bool(shared)
    return torch.cat(pieces).numpy().astype(np.float32, copy=False), bool(shared)


def measure_embed_seconds(model: CPCModel, waves: Sequence[np.ndarray], starts: Sequence[np.ndarray],
                          crop: int, kind: str = "context", batch_size: int = 64,
                          shared: Optional[bool] = None, layer: Optional[str] = None,
                          pool: str = "mean") -> float:
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
        possible = model.window is not None and crop % model.window == 0 and layer is None
        shared = possible and window_reuse(starts, crop, model.window or 1) >= MIN_WINDOW_REUSE
    started = time.perf_counter()
    embed_crops(model, waves, probe, crop, kind, batch_size, shared, layer=layer, pool=pool)
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


def embedding_dim(config: Config, kind: str, pool: str = "mean") -> int:
    dim = {"z_mean": config.model.z_dim, "zc": config.model.z_dim + config.model.c_dim}.get(
        kind, config.model.c_dim)
    return dim * 2 if pool in ("meanstd", "meanmax") and kind != "context" else dim


def pool_by_file(rows: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """Average the crop rows of each file: [total crops, dim] -> [files, dim]."""
    edges = np.cumsum([0, *counts])
    return np.stack([rows[a:b].mean(axis=0) for a, b in zip(edges[:-1], edges[1:])]).astype(np.float32)


# ---------------------------------------------------------------- folders and files


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


def data_identity(data_dir: str | Path, extensions: Sequence[str]) -> dict[str, Any]:
    """The audio files below `data_dir` as they are now (paths, sizes, modification times)."""
    root = Path(data_dir)
    files = manifest_files(root) if is_prepared(root) else discover_audio_files(root, extensions)
    return files_fingerprint(root, files)


def embedding_inputs(model: dict[str, Any], data_dir: str | Path, extensions: Sequence[str], *,
                     split: str, crops: Crops, kind: str, seed: int, label_mode: str = "auto",
                     label_pattern: Optional[str] = None,
                     labels_csv: Optional[str | Path] = None, layer: Optional[str] = None,
                     pool: str = "mean") -> dict[str, Any]:
    """What one split's embeddings are made from, as recorded in `<split>.json` (`inputs`):
    the model (`restore.model_identity`), the data folder's files and the settings. An
    embedding whose recorded inputs equal these, computed now, is up to date."""
    labels: dict[str, Any] = {"mode": label_mode, "pattern": label_pattern}
    if labels_csv is not None:
        table = Path(labels_csv)
        labels["csv"] = {"path": os.path.abspath(table),
                         "sha256": sha256_file(table) if table.is_file() else None}
    return normalised_json({
        "model": model,
        "data": data_identity(data_dir, extensions),
        "settings": {"split": split, "crops": crops, "kind": kind, "seed": seed, "labels": labels,
                     "layer": layer, "pool": pool},
    })


def embed_folder(run_dir_or_model: Any, data_dir: str | Path, split: str, *,
                 folder: str | Path, crops: Optional[Crops] = None, kind: str = "context",
                 seed: int = 0, batch_size: int = 64, label_mode: str = "auto",
                 label_pattern: Optional[str] = None, labels_csv: Optional[str | Path] = None,
                 random_init: bool = False, device: str | torch.device = "auto",
                 progress: bool = True, shared: Optional[bool] = None, layer: Optional[str] = None,
                 pool: str = "mean") -> EmbeddingSplit:
    """Embed every audio file below `data_dir` (this split's folder) and write
    `<folder>/<split>.{npy,csv,json}` (the results layout's embeddings folder is chosen by
    the caller: `audiocpc.embed_folder` puts it in `<out>/embeddings/<run name>`). `crops`
    defaults to 90 for the train split and 5 otherwise; `random_init` embeds with the
    untrained baseline; `layer` embeds one layer of `CPCModel.hidden_states` instead of
    `kind`, its frames pooled by `pool` (which also pools the frames of the context_mean and
    z_mean kinds). The JSON records the identity of the model, data and settings."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", split):
        raise ConfigError(f"--split: '{split}' must be a plain name such as train or test")
    crops = default_crops(split) if crops is None else crops
    check_options(kind, crops, batch_size, layer, pool)
    rule = label_rule(label_mode, label_pattern, labels_csv)  # a bad label table fails early
    run = _as_run(run_dir_or_model, random_init, device)
    config, model = run.config, run.model
    crop = crop_length(config)
    check_layer(model, crop, layer)
    sample_rate = config.data.sample_rate
    root = Path(data_dir)
    # taken before the data is read: a file that changes while it is embedded makes the
    # recorded identity stale, so the next `audiocpc run` embeds again
    inputs = embedding_inputs(run.identity, root, config.data.extensions, split=split, crops=crops,
                              kind=kind, seed=seed, label_mode=label_mode,
                              label_pattern=label_pattern, labels_csv=labels_csv, layer=layer,
                              pool=pool)
    # the one data path; each file on its own (data.join is for training crops only)
    report = open_data(root, config.data, crop, progress=progress, join=NO_JOIN)
    report.check(config.data.on_bad_file)  # nothing usable: a clear error before any work
    corpus = report.corpus(labels=rule, crop_source=crop_source(config))
    names = [relative_name(p, root) for p in corpus.paths]
    file_labels = corpus.labels
    grid = model.window or 1
    starts = plan_crops(corpus.lengths, names, crop, crops, seed, grid)
    waves = corpus.waves()  # opened on demand: no open file per recording
    if progress:  # the plan, with a measured estimate, before the long part
        seconds = measure_embed_seconds(model, waves, starts, crop, kind, batch_size, shared,
                                        layer, pool)
        total = sum(len(x) for x in starts)
        log.info("plan: embedding %s: %d file(s) x %s crop(s) = %d crops of %.3f s with %s; about "
                 "%s (measured on one batch)", split, len(names), crops, total, crop / sample_rate, run.name,
                 format_duration(seconds))
        hint = faster_crops_hint(seconds, crops, corpus.lengths.tolist(), crop)
        if hint:
            log.warning("embedding %d crops takes long: %s", total, hint)
    rows, used_shared = embed_crops(model, waves, starts, crop, kind, batch_size, shared, progress,
                                    desc=f"embedding {split}", layer=layer, pool=pool)
    counts = [len(s) for s in starts]
    row_files = [n for n, c in zip(names, counts) for _ in range(c)]
    row_labels = [lab for lab, c in zip(file_labels, counts) for _ in range(c)]
    start_seconds = np.concatenate(starts).astype(np.float64) / sample_rate

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    report.write(folder / f"{split}_data_report.json")
    info = {
        "run": run.name, "run_dir": os.path.abspath(run.run_dir), "random_init": random_init,
        "split": split,
        "data_dir": str(root.resolve()), "kind": kind, "layer": layer, "pool": pool,
        "crops": crops, "seed": seed,
        "rows": int(rows.shape[0]), "dim": int(rows.shape[1]), "files": len(names),
        "sample_rate": sample_rate, "crop_samples": crop, "crop_seconds": crop / sample_rate,
        "mode": config.model.mode, "shared_window_encoding": used_shared,
        "skipped_short": len(corpus.skipped_short), "skipped_unreadable": len(corpus.bad_files),
        "unlabelled_files": sum(1 for lab in file_labels if not lab),
        "labels": sorted({lab for lab in file_labels if lab}),
        "inputs": inputs,
    }
    result = EmbeddingSplit(rows, row_files, row_labels, start_seconds,
                            np.full(len(row_files), crop / sample_rate), info).write(folder, split)
    log.info("embedded %d crops of %d file(s) -> %s (%d skipped as shorter than %.3f s)",
             len(row_files), len(names), result.array_path, len(corpus.skipped_short), crop / sample_rate)
    return result

