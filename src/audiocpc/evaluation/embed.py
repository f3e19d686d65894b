"""Embeddings of audio files with a trained CPC model: one array and one manifest per split.

`embed_folder` writes, into the embeddings folder it is given (see evaluation/store.py):

- `<split>.npy`: float32 [rows, dim], one row per crop;
- `<split>.csv`: columns `row,file,start_seconds,duration_seconds,label` (file = posix path
  below the data folder, label "" = unlabelled);
- `<split>.json`: what was embedded and how (kind, crops, run, dims, sample rate, counts).

A crop is what the context network saw in training: T windows in window mode (the embedding
`context` is c at the last step), `data.full_duration` seconds in frame mode. Crop starts
are drawn from a generator seeded by (seed, file name), so they are reproducible and do not
depend on which other files are in the folder. The starts lie on a grid (`crop_grid`: the
window in window mode, the encoder's frame hop in frame mode), so crops share encoder work:

- window mode: the encoder runs once per distinct window of a file and each crop's context is
  computed from the shared window embeddings;
- frame mode: the conv stack runs once over the stretches of a file the crops cover (in
  bounded blocks), and each crop's frames are gathered from it; only the few frames at a
  crop's edges, which see the crop's zero padding, are encoded from the crop itself.

Both give the numbers crop-by-crop encoding gives (to float rounding). A file with fewer grid
positions than crops requested gets every position, some more than once: a repeated crop is
embedded once and its row repeated.
"""

from __future__ import annotations

import logging
import os
import re
import weakref
import zlib
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Optional, Sequence, Union

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
from audiocpc.training.device import resolve_device
from audiocpc.training.distributed import DistributedContext, contiguous_share, distributed_session
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
# Frame mode: the shared conv stack runs over at most this many frames per block (bounded
# memory on hour-long files), block lengths rounded up to a multiple of FRAME_QUANTUM frames
# (few distinct shapes), and at most SHARED_CROPS_PER_PASS crops of a file are assembled at once.
FRAME_BLOCK = 512
FRAME_QUANTUM = 16
SHARED_CROPS_PER_PASS = 256


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
    a crop is left out). A number: that many random starts on multiples of `grid` (see
    `crop_grid`: so crops share encoder work), seeded by (seed, key) so they are
    reproducible, distinct while the file has room. A file with fewer grid positions than
    `crops` gets every position, each as often as the count allows and the remainder drawn
    (the grid is kept: repeated crops are embedded once, see `embed_crops`)."""
    if length < crop:
        return np.zeros(0, dtype=np.int64)
    if crops == "all":
        return np.arange(0, length - crop + 1, crop, dtype=np.int64)
    count = int(crops)  # a number here (check_options)
    grid = max(1, int(grid))
    positions = (length - crop) // grid + 1
    rng = np.random.default_rng([seed, zlib.crc32(key.encode("utf-8", "surrogateescape"))])
    if count <= positions:
        picks = rng.choice(positions, size=count, replace=False)
    else:
        picks = np.concatenate([np.repeat(np.arange(positions), count // positions),
                                rng.choice(positions, size=count % positions, replace=False)])
    return np.sort(picks).astype(np.int64) * grid


def plan_crops(lengths: Sequence[int] | np.ndarray, keys: Sequence[str], crop: int, crops: Crops, seed: int,
               grid: int = 1) -> list[np.ndarray]:
    return [crop_starts(int(n), crop, crops, seed, key, grid) for n, key in zip(lengths, keys)]


def frame_geometry(model: CPCModel) -> Optional[tuple[int, int, int]]:
    """(hop, first, span) of the encoder's z frames in input samples (frame t reads samples
    [hop * t + first, hop * t + first + span)), or None when the encoder does not say."""
    geometry = getattr(model.encoder, "layer_geometry", None)
    if not callable(geometry):
        return None
    layers = geometry()
    return (int(layers[-1][0]), int(layers[-1][1]), int(layers[-1][2])) if layers else None


def crop_grid(model: CPCModel) -> int:
    """Samples between the possible crop starts: the window in window mode, the encoder's
    frame hop in frame mode, so that crops share windows or frames (1 when unknown)."""
    if model.window is not None:
        return model.window
    geometry = frame_geometry(model)
    return geometry[0] if geometry is not None else 1


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


class FramePlan(NamedTuple):
    """How a frame-mode crop of `crop` samples splits into shared and own frames.

    Frames [left, right) of a crop read only samples inside it (its interior): on a crop
    starting at a multiple of `hop` they equal the frames of the whole file, so they are
    taken from one pass over the file. Frames [0, left) and [right, frames) see the crop's
    zero padding: they come from the crop's first `edge` samples (the prefix) and its last
    `edge` samples (the suffix, whose frame t is the crop's frame t + shift)."""

    hop: int
    first: int
    span: int
    frames: int
    left: int
    right: int
    edge: int
    shift: int


def frame_plan(model: CPCModel, crop: int) -> Optional[FramePlan]:
    """The plan for sharing frames between crops, or None where it does not apply (window
    mode, an encoder without a layer geometry, or crops without interior frames)."""
    geometry = frame_geometry(model)
    output_length = getattr(model.encoder, "output_length", None)
    if model.window is not None or geometry is None or not callable(output_length):
        return None
    hop, first, span = geometry
    frames = int(output_length(crop))
    if hop < 1 or first > 0 or frames < 1:
        return None
    left = (-first + hop - 1) // hop  # the first frame that reads no padding on the left
    right = min(frames, (crop - first - span) // hop + 1) if crop >= first + span else 0
    if right <= left:
        return None
    prefix = hop * (left - 1) + first + span if left > 0 else 0  # frames [0, left) end by here
    suffix = crop - hop * (right - left) if right < frames else 0  # starts on the frame grid
    need = max(prefix, suffix)
    shift = (crop - need) // hop if need else 0  # one length for both: they share a batch
    return FramePlan(hop, first, span, frames, left, right, crop - hop * shift if need else 0, shift)


def _phase_groups(starts: np.ndarray, hop: int) -> Iterator[np.ndarray]:
    """Indices of the crops of one file that lie on one frame grid (start mod hop), in
    pieces of at most SHARED_CROPS_PER_PASS crops (bounded memory for files with many)."""
    phases = starts % hop
    for phase in np.unique(phases):
        members = np.flatnonzero(phases == phase)
        for first in range(0, len(members), SHARED_CROPS_PER_PASS):
            yield members[first : first + SHARED_CROPS_PER_PASS]


def _needed_frames(frame_starts: np.ndarray, plan: FramePlan) -> np.ndarray:
    """Boolean mask over the frames of a file (on one grid): those inside some crop's interior."""
    edges = np.zeros(int(frame_starts.max()) + plan.right + 1, dtype=np.int64)
    np.add.at(edges, frame_starts + plan.left, 1)
    np.add.at(edges, frame_starts + plan.right, -1)
    return np.cumsum(edges)[:-1] > 0


def frame_reuse(starts: Sequence[np.ndarray], crop: int, plan: FramePlan) -> float:
    """Samples encoded crop by crop / samples encoded with shared frames (the covered
    frames once, plus each crop's edge slices): how much work sharing frames saves."""
    shared = 0
    for s in starts:
        if len(s):
            for members in _phase_groups(np.asarray(s), plan.hop):
                frame_starts = (s[members] - s[members[0]] % plan.hop) // plan.hop
                shared += int(_needed_frames(frame_starts, plan).sum()) * plan.hop
                shared += len(members) * plan.edge * ((plan.left > 0) + (plan.right < plan.frames))
    return sum(len(s) for s in starts) * crop / max(shared, 1)


def _encode_slices(model: CPCModel, slices: list[np.ndarray], take: tuple[int, int], budget: int,
                   device: torch.device) -> torch.Tensor:
    """z frames [take[0], take[1]) of equally long waveform slices, encoded in batches of
    about `budget` samples: [slices, take[1] - take[0], z_dim]."""
    per_batch = max(1, budget // max(1, slices[0].size))
    out = []
    for first in range(0, len(slices), per_batch):
        batch = torch.from_numpy(np.stack(slices[first : first + per_batch])).to(device)
        out.append(model.encode(batch)[:, take[0] : take[1]])
    return torch.cat(out)


def _shared_frames(model: CPCModel, waves: Sequence[np.ndarray], starts: Sequence[np.ndarray],
                   files: list[int], crop: int, kind: str, batch_size: int, device: torch.device,
                   plan: FramePlan, pool: str = "mean") -> torch.Tensor:
    """Frame mode: the conv stack runs once over the frames the crops of a file cover (in
    blocks of at most FRAME_BLOCK frames, each block's slice reaching as far as its frames'
    receptive fields), and each crop's z is those frames plus its own edge frames."""
    hop, left, right = plan.hop, plan.left, plan.right
    budget = batch_size * crop  # samples per encoder call, as crop-by-crop batches
    results: list[tuple[np.ndarray, torch.Tensor]] = []  # (row numbers, embeddings)
    row_offset = 0
    for f in files:
        wave, file_starts = waves[f], np.asarray(starts[f])
        for members in _phase_groups(file_starts, hop):
            group_starts = file_starts[members]
            phase = int(group_starts[0] % hop)
            frame_starts = (group_starts - phase) // hop
            needed = _needed_frames(frame_starts, plan)
            # blocks of needed frames: [b0, b1) on this grid, cut at FRAME_BLOCK
            change = np.flatnonzero(np.diff(np.concatenate([[0], needed.astype(np.int8), [0]])))
            blocks = [(b0, min(b0 + FRAME_BLOCK, run_end)) for run_start, run_end in
                      zip(change[::2], change[1::2]) for b0 in range(int(run_start), int(run_end), FRAME_BLOCK)]
            by_length: dict[int, list[tuple[int, int]]] = {}
            for b0, b1 in blocks:
                padded = -(-(b1 - b0) // FRAME_QUANTUM) * FRAME_QUANTUM
                by_length.setdefault(padded, []).append((b0, b1))
            table = np.full(needed.size, -1, dtype=np.int64)  # frame on this grid -> row of `frames`
            frames, count = [], 0
            for padded, group in by_length.items():
                # slice for frames [b0, b0 + padded): from frame b0 - left (its receptive
                # field starts inside the file) to the end of the last frame's field
                length = hop * (padded - 1 + left) + plan.first + plan.span
                slices = []
                for b0, _ in group:
                    start = phase + hop * (b0 - left)
                    piece = np.asarray(wave[start : start + length], dtype=np.float32)
                    slices.append(np.pad(piece, (0, length - piece.size)))  # zeros past the end reach only unused frames
                encoded = _encode_slices(model, slices, (left, left + padded), budget, device)
                for (b0, b1), block in zip(group, encoded):
                    table[b0:b1] = count + np.arange(b1 - b0)
                    frames.append(block[: b1 - b0])
                    count += b1 - b0
            shared_z = torch.cat(frames)
            interior = table[frame_starts[:, None] + np.arange(left, right)]  # [crops, right - left]
            parts = [shared_z[torch.from_numpy(interior).to(device)]]
            edge, n = plan.edge, len(group_starts)
            slices = []  # the prefixes, then the suffixes, of the crops that have such edge frames
            if left > 0:
                slices += [np.asarray(wave[s : s + edge], dtype=np.float32) for s in group_starts]
            if right < plan.frames:
                slices += [np.asarray(wave[s + crop - edge : s + crop], dtype=np.float32) for s in group_starts]
            if slices:
                ends = _encode_slices(model, slices, (0, plan.frames - plan.shift), budget, device)
                if left > 0:
                    parts.insert(0, ends[:n, :left])
                if right < plan.frames:
                    parts.append(ends[-n:, right - plan.shift :])
            z = torch.cat(parts, dim=1)  # [crops, frames, z_dim]
            # the context over all the group's crops at once (at most SHARED_CROPS_PER_PASS):
            # their z is in memory already, and a recurrent context runs one step of the
            # whole batch at a time, so fewer, larger batches cost less per crop
            c = None if kind == "z_mean" else model.contextualize(z)
            results.append((row_offset + members, pool_steps(z, c, kind, pool)))
        row_offset += len(file_starts)
    out = torch.empty((row_offset, results[0][1].shape[1]), dtype=results[0][1].dtype, device=results[0][1].device)
    for rows, values in results:
        out[torch.from_numpy(rows).to(out.device)] = values
    return out


def _sharing(model: CPCModel, crop: int, layer: Optional[str]) -> Optional[str]:
    """Which shared encoding this model and crop allow: "window", "frame" or None."""
    if layer is not None:
        return None
    if model.window is not None:
        return "window" if crop % model.window == 0 else None
    return "frame" if frame_plan(model, crop) is not None else None


def sharing_reuse(model: CPCModel, starts: Sequence[np.ndarray], crop: int, layer: Optional[str] = None) -> float:
    """How much encoder work sharing saves on these (distinct) crops; 0 where it does not apply."""
    mode = _sharing(model, crop, layer)
    if mode == "window":
        return window_reuse(starts, crop, model.window or 1)
    plan = frame_plan(model, crop) if mode == "frame" else None
    return frame_reuse(starts, crop, plan) if plan is not None else 0.0


def _run_shared(model: CPCModel, waves: Sequence[np.ndarray], starts: Sequence[np.ndarray],
                files: list[int], crop: int, kind: str, batch_size: int, device: torch.device,
                pool: str = "mean") -> torch.Tensor:
    if model.window is not None:
        return _shared(model, waves, starts, files, crop, kind, batch_size, device, pool=pool)
    plan = frame_plan(model, crop)
    assert plan is not None  # checked by _sharing
    return _shared_frames(model, waves, starts, files, crop, kind, batch_size, device, plan, pool)


# model -> {(crop, kind): whether sharing is exact}: locality is a property of the
# architecture, so a model is checked once, not on every call (e.g. per file in the API)
_EXACTNESS: weakref.WeakKeyDictionary[CPCModel, dict[tuple[int, str], bool]] = weakref.WeakKeyDictionary()


def _shared_is_exact(model: CPCModel, waves: Sequence[np.ndarray], starts: Sequence[np.ndarray],
                     crop: int, kind: str, device: torch.device) -> bool:
    """Whether this model's encoder is local (so sharing changes nothing): checked on a few
    crops, because an encoder may normalise across a whole crop (per-bin log-mel
    standardisation, layer norm over time)."""
    known = _EXACTNESS.setdefault(model, {})
    if (crop, kind) not in known:
        first = next(i for i, s in enumerate(starts) if len(s))
        probe = [np.asarray(s[:4]) if i == first else np.zeros(0, np.int64) for i, s in enumerate(starts)]
        a = _run_shared(model, waves, probe, [first], crop, kind, 4, device)
        b = _direct(model, waves, probe, [first], crop, kind, 4, device)
        known[(crop, kind)] = bool(torch.allclose(a, b, atol=1e-4, rtol=1e-3))
    return known[(crop, kind)]


def distinct_crops(starts: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """(each file's distinct starts, sorted; for every planned crop in file-then-start order,
    the row of its distinct crop): repeated crops are embedded once."""
    unique, rows, offset = [], [], 0
    for s in starts:
        values, inverse = np.unique(np.asarray(s, dtype=np.int64), return_inverse=True)
        unique.append(values)
        rows.append(inverse.reshape(-1) + offset)
        offset += values.size
    return unique, np.concatenate(rows) if rows else np.zeros(0, np.int64)


@torch.inference_mode()
def choose_sharing(model: CPCModel, waves: Sequence[np.ndarray], starts: Sequence[np.ndarray],
                   crop: int, kind: str = "context", layer: Optional[str] = None,
                   shared: Optional[bool] = None) -> bool:
    """Whether `embed_crops` shares encoder work on these (distinct) crops: `shared` when
    given (True where sharing cannot apply is a ValueError); None = when the crops share
    enough work to pay off and sharing gives the same numbers for this model."""
    possible = _sharing(model, crop, layer) is not None
    if shared and not possible:
        raise ValueError("shared encoding needs window mode (crops of whole windows) or a frame "
                         "encoder with a layer geometry, and no layer")
    if shared is None:
        shared = possible and any(len(s) for s in starts) and \
            sharing_reuse(model, starts, crop, layer) >= MIN_WINDOW_REUSE
        if shared and not _shared_is_exact(model, waves, starts, crop, kind,
                                           next(model.parameters()).device):
            log.info("this model's encoder is not local (it normalises across a crop): embedding "
                     "crop by crop")
            shared = False
    return bool(shared)


@torch.inference_mode()
def embed_crops(model: CPCModel, waves: Sequence[np.ndarray], starts: Sequence[np.ndarray],
                crop: int, kind: str = "context", batch_size: int = 64,
                shared: Optional[bool] = None, progress: bool = False,
                desc: str = "embedding", layer: Optional[str] = None,
                pool: str = "mean") -> tuple[np.ndarray, bool]:
    """Embed the crops `waves[f][s : s + crop]` for every file f and start s in `starts[f]`.

    Returns (float32 [total crops, dim] in file-then-start order, whether shared encoding
    was used: shared windows in window mode, shared frames in frame mode). `shared=None`
    uses it when crops share enough work to pay off and it gives the same numbers for this
    model. A crop planned more than once is embedded once and its row repeated. `layer` (a
    name from `CPCModel.hidden_states`) embeds that layer's frames of each crop pooled with
    `pool`, crop by crop."""
    model.eval()
    device = next(model.parameters()).device
    planned = starts
    starts, row_of = distinct_crops(planned)
    counts = [len(s) for s in starts]
    shared = choose_sharing(model, waves, starts, crop, kind, layer, shared)

    def run(files: list[int]) -> torch.Tensor:
        if shared:
            return _run_shared(model, waves, starts, files, crop, kind, batch_size, device, pool=pool)
        return _direct(model, waves, starts, files, crop, kind, batch_size, device, layer=layer, pool=pool)

    pieces = []
    with tqdm(total=sum(1 for n in counts if n), desc=desc, unit="file", disable=not progress,
              leave=False) as bar:
        for files in _file_groups(counts, batch_size):
            pieces.append(run(files).float().cpu())
            bar.update(len(files))
    if not pieces:
        return np.zeros((0, 0), dtype=np.float32), bool(shared)
    rows = torch.cat(pieces).numpy().astype(np.float32, copy=False)
    return (rows if len(row_of) == len(rows) and np.array_equal(row_of, np.arange(len(rows)))
            else rows[row_of]), bool(shared)


def measure_embed_seconds(model: CPCModel, waves: Sequence[np.ndarray], starts: Sequence[np.ndarray],
                          crop: int, kind: str = "context", batch_size: int = 64,
                          shared: Optional[bool] = None, layer: Optional[str] = None,
                          pool: str = "mean") -> float:
    """Estimated seconds to embed every planned crop: the first files' distinct crops
    (about one batch) are embedded and timed, and the time scaled to all distinct crops."""
    import time

    starts = distinct_crops(starts)[0]
    counts = [len(s) for s in starts]
    total = sum(counts)
    first = next(_file_groups(counts, batch_size), [])
    if not total or not first:
        return 0.0
    probe = [s if i in first else np.zeros(0, np.int64) for i, s in enumerate(starts)]
    if shared is None:  # judge sharing on the whole plan, as the real run will
        shared = (_sharing(model, crop, layer) is not None
                  and sharing_reuse(model, starts, crop, layer) >= MIN_WINDOW_REUSE)
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


# The rule that places embedding crops; part of every split's recorded inputs, so embeddings
# made under an older rule are redone instead of being mixed with new ones. 2: crops stay on
# the model's grid (window or frame hop) and a repeated crop is embedded once.
CROP_RULE = 2


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
                     "layer": layer, "pool": pool, "crop_rule": CROP_RULE},
    })


def embed_folder(run_dir_or_model: Any, data_dir: str | Path, split: str, *,
                 folder: str | Path, crops: Optional[Crops] = None, kind: str = "context",
                 seed: int = 0, batch_size: int = 64, label_mode: str = "auto",
                 label_pattern: Optional[str] = None, labels_csv: Optional[str | Path] = None,
                 random_init: bool = False, device: str | torch.device = "auto",
                 progress: bool = True, shared: Optional[bool] = None, layer: Optional[str] = None,
                 pool: str = "mean", dist: Optional[DistributedContext] = None) -> EmbeddingSplit:
    """Embed every audio file below `data_dir` (this split's folder) and write
    `<folder>/<split>.{npy,csv,json}` (the results layout's embeddings folder is chosen by
    the caller: `audiocpc.embed_folder` puts it in `<out>/embeddings/<run name>`). `crops`
    defaults to 90 for the train split and 5 otherwise; `random_init` embeds with the
    untrained baseline; `layer` embeds one layer of `CPCModel.hidden_states` instead of
    `kind`, its frames pooled by `pool` (which also pools the frames of the context_mean and
    z_mean kinds). The JSON records the identity of the model, data and settings.

    Under torchrun (or with `dist` given) every process embeds a consecutive share of the
    files (about equal numbers of crops) on its own device, rank 0 gathers the rows and
    writes the same three files one process writes (same rows in the same order, the same
    JSON); the other ranks write nothing. Rank 0 returns the whole split, the others their
    own share of its rows (`info["share"]`: rank, world_size, first and end row)."""
    if dist is None:  # join the process group when torchrun started us (else one process)
        with distributed_session("auto", EMBED_TIMEOUT_S, str(device)) as session:
            return embed_folder(run_dir_or_model, data_dir, split, folder=folder, crops=crops,
                                kind=kind, seed=seed, batch_size=batch_size, label_mode=label_mode,
                                label_pattern=label_pattern, labels_csv=labels_csv,
                                random_init=random_init, device=device, progress=progress,
                                shared=shared, layer=layer, pool=pool, dist=session)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", split):
        raise ConfigError(f"--split: '{split}' must be a plain name such as train or test")
    crops = default_crops(split) if crops is None else crops
    check_options(kind, crops, batch_size, layer, pool)
    rule = label_rule(label_mode, label_pattern, labels_csv)  # a bad label table fails early
    if dist.enabled and isinstance(device, str):  # auto and a bare cuda: this process's own GPU
        device = resolve_device(device, local_rank=dist.local_rank)
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
    report = open_data(root, config.data, crop, progress=progress and dist.is_main, join=NO_JOIN)
    report.check(config.data.on_bad_file)  # nothing usable: a clear error before any work
    corpus = report.corpus(labels=rule, crop_source=crop_source(config))
    names = [relative_name(p, root) for p in corpus.paths]
    file_labels = corpus.labels
    starts = plan_crops(corpus.lengths, names, crop, crops, seed, crop_grid(model))
    waves = corpus.waves()  # opened on demand: no open file per recording
    model.eval()
    # decided once on the whole plan (and rank 0's decision used by all), so every process
    # embeds its share the way one process would embed them all
    shared = bool(dist.broadcast_from_main(choose_sharing(
        model, waves, distinct_crops(starts)[0], crop, kind, layer, shared)))
    if progress and dist.is_main:  # the plan, with a measured estimate, before the long part
        seconds = measure_embed_seconds(model, waves, starts, crop, kind, batch_size, shared,
                                        layer, pool) / dist.world_size
        total = sum(len(x) for x in starts)
        processes = f" over {dist.world_size} processes" if dist.enabled else ""
        log.info("plan: embedding %s: %d file(s) x %s crop(s) = %d crops of %.3f s with %s; about "
                 "%s%s (measured on one batch)", split, len(names), crops, total, crop / sample_rate,
                 run.name, format_duration(seconds), processes)
        hint = faster_crops_hint(seconds, crops, corpus.lengths.tolist(), crop)
        if hint:
            log.warning("embedding %d crops takes long: %s", total, hint)
    distinct = sum(len(np.unique(s)) for s in starts)
    repeated = sum(1 for s in starts if len(np.unique(s)) < len(s))
    if repeated:
        log.info("%d file(s) offer fewer crop starts on the %d-sample grid than %s crops: each distinct "
                 "crop is embedded once and its row repeated (%d distinct of %d rows)", repeated,
                 crop_grid(model), crops, distinct, sum(len(s) for s in starts))
    work = [len(np.unique(s)) for s in starts]  # distinct crops: what a file costs to embed
    share = contiguous_share(work, dist.rank, dist.world_size)
    mine = [s if i in share else np.zeros(0, np.int64) for i, s in enumerate(starts)]
    rows, used_shared = embed_crops(model, waves, mine, crop, kind, batch_size, shared,
                                    progress and dist.is_main, desc=f"embedding {split}",
                                    layer=layer, pool=pool)
    counts = [len(s) for s in starts]
    share_rows = [sum(counts[i] for i in contiguous_share(work, r, dist.world_size))
                  for r in range(dist.world_size)]
    first_row = sum(share_rows[: dist.rank])
    if dist.enabled:
        gathered = _gather_rows(dist, rows, share_rows)
        if not dist.is_main:
            return _share_of_split(dist, rows, names, file_labels, starts, crop, sample_rate,
                                   folder, split, first_row)
        assert gathered is not None
        rows = gathered
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
        "mode": config.model.mode, "distinct_crops": distinct,
        "shared_window_encoding": used_shared and config.model.mode == "window",
        "shared_frame_encoding": used_shared and config.model.mode == "frame",
        "skipped_short": len(corpus.skipped_short), "skipped_unreadable": len(corpus.bad_files),
        "unlabelled_files": sum(1 for lab in file_labels if not lab),
        "labels": sorted({lab for lab in file_labels if lab}),
        "inputs": inputs,
    }
    result = EmbeddingSplit(rows, row_files, row_labels, start_seconds,
                            np.full(len(row_files), crop / sample_rate), info).write(folder, split)
    if dist.enabled:  # the others return once the files are written (see _share_of_split)
        dist.broadcast_from_main(result.info)
    log.info("embedded %d crops of %d file(s) -> %s (%d skipped as shorter than %.3f s)",
             len(row_files), len(names), result.array_path, len(corpus.skipped_short), crop / sample_rate)
    return result



# Ranks wait for the slowest share at the gather; a rank that fails is ended by torchrun,
# which stops the others, so this only bounds a wait that torchrun cannot see.
EMBED_TIMEOUT_S = 24 * 3600.0
# Rows sent to rank 0 per round of the gather: bounded messages whatever the split's size.
GATHER_ROWS = 1 << 16


def _gather_rows(dist: DistributedContext, rows: np.ndarray, share_rows: Sequence[int]) -> Optional[np.ndarray]:
    """Every rank's rows, concatenated in rank order, on rank 0 (None on the others), in
    rounds of at most GATHER_ROWS rows per rank (every rank knows every share's size)."""
    pieces: list[np.ndarray] = []
    rounds = -(-max(share_rows) // GATHER_ROWS)
    for number in range(rounds):
        part = np.ascontiguousarray(rows[number * GATHER_ROWS : (number + 1) * GATHER_ROWS])
        received = dist.gather_to_main(part)
        if received is not None:
            pieces.extend(received)
    if not dist.is_main:
        return None
    # rank order, then round order within a rank
    ordered = [pieces[number * dist.world_size + rank] for rank in range(dist.world_size)
               for number in range(rounds)]
    ordered = [piece for piece in ordered if len(piece)]
    return np.concatenate(ordered).astype(np.float32, copy=False) if ordered else np.zeros((0, 0), np.float32)


def _share_of_split(dist: DistributedContext, rows: np.ndarray, names: list[str], file_labels: list[str],
                    starts: list[np.ndarray], crop: int, sample_rate: int, folder: str | Path,
                    split: str, first_row: int) -> EmbeddingSplit:
    """What a rank other than 0 returns: its own rows and their crops, with the JSON rank 0
    wrote (received once it is written, so every rank returns after the files exist)."""
    info = dist.broadcast_from_main(None)
    counts = [len(s) for s in starts]
    row_files = [n for n, c in zip(names, counts) for _ in range(c)]
    row_labels = [lab for lab, c in zip(file_labels, counts) for _ in range(c)]
    start_seconds = np.concatenate(starts).astype(np.float64) / sample_rate
    end = first_row + len(rows)
    info = {**info, "share": {"rank": dist.rank, "world_size": dist.world_size,
                              "first_row": first_row, "end_row": end}}
    return EmbeddingSplit(rows, row_files[first_row:end], row_labels[first_row:end],
                          start_seconds[first_row:end], np.full(end - first_row, crop / sample_rate),
                          info, Path(folder), split)
