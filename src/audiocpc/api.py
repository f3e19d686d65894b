"""Use a trained model from Python.

    model = audiocpc.load("results/cpc/mymodel")
    features = model.embed(waveform, sample_rate)          # frame-level z, c, lengths
    matrix = model.embed_files(["a.wav", "b.wav"])         # one pooled row per file

Waveforms may be numpy arrays or torch tensors at any sample rate (resampled with soxr):
`[samples]` (mono) or `[samples, channels]` (the layout of soundfile.read; channels are
averaged). For `[channels, samples]` (the layout of torchaudio.load) pass
`channels_first=True`. A batch is a list of such waveforms (any lengths) or a 3-D array
`[batch, samples, channels]`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import soxr
import torch
from sklearn.base import BaseEstimator, TransformerMixin

from audiocpc.data.audio import standardize
from audiocpc.data.cache import AudioCache
from audiocpc.config import Config
from audiocpc.evaluation.embed import (Crops, check_options, crop_grid, crop_length, embed_crops, embedding_dim,
                            plan_crops, pool_by_file)
from audiocpc.errors import AudiocpcError, ConfigError
from audiocpc.evaluation.store import EmbeddingSplit
from audiocpc.models import CPCModel
from audiocpc.models.checks import check_model_config, component_problems
from audiocpc.models.hidden import HiddenStates
from audiocpc.presets import apply_overrides, preset_dict, validate_config
from audiocpc.training.restore import RestoredRun, restore_run

Waveform = Union[np.ndarray, torch.Tensor]
log = logging.getLogger("audiocpc")


def load_config(preset: str = "1dconv_gru", overrides: Optional[Sequence[str]] = None) -> Config:
    """A preset (or YAML file) with dotted overrides, every check done: the settings and
    the model's components (`audiocpc.load_config("cpc_tiny", ["train.lr=1e-3"])`)."""
    raw = apply_overrides(preset_dict(preset), list(overrides or []))
    try:
        config = validate_config(raw)
    except ConfigError as exc:  # list the components' problems too, in the same error
        extra = [p for p in component_problems(raw) if p not in exc.problems]
        raise ConfigError(exc.problems + extra) from None
    return check_model_config(config)


@dataclass
class Features:
    """Frame-level features of a batch, on the CPU: z [B, L, z_dim], c [B, L, c_dim] and the
    number of valid frames per item [B] (frames past it come from zero padding)."""

    z: torch.Tensor
    c: torch.Tensor
    lengths: torch.Tensor


def _as_numpy(waveform: Waveform) -> np.ndarray:
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().cpu().numpy()
    return np.asarray(waveform, dtype=np.float32)


def to_mono(waveform: Waveform, input_rate: int, sample_rate: int, channels_first: bool = False) -> np.ndarray:
    """One waveform -> float32 mono at the model's `sample_rate`, computed exactly as files are decoded
    (channels averaged, then resampled with soxr HQ), so arrays and files embed alike."""
    wave = _as_numpy(waveform)
    if wave.ndim == 2:
        if channels_first:
            wave = wave.T
        elif wave.shape[0] < wave.shape[1]:
            raise ValueError(
                f"a waveform of shape {tuple(wave.shape)} looks like [channels, samples]; 2-D "
                "waveforms are [samples, channels]: pass channels_first=True (or a list of 1-D "
                "waveforms for a batch)")
        wave = wave.mean(axis=1) if wave.shape[1] > 1 else wave[:, 0]
    elif wave.ndim != 1:
        raise ValueError("expected a waveform [samples] or [samples, channels], "
                         f"got shape {tuple(wave.shape)}")
    if not np.all(np.isfinite(wave)):
        raise ValueError("the waveform contains NaN or infinite samples")
    if input_rate != sample_rate and wave.size:
        wave = soxr.resample(wave, input_rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(wave, dtype=np.float32)


def _as_list(waveforms: Any) -> tuple[list[Any], bool]:
    """(items, whether the input was a batch)."""
    if isinstance(waveforms, (list, tuple)):
        return list(waveforms), True
    if isinstance(waveforms, (np.ndarray, torch.Tensor)) and waveforms.ndim == 3:
        return list(waveforms), True
    return [waveforms], False


class CPCEmbedder:
    """A trained CPC model (eval mode, on the best device) that embeds audio.

    Build it with `audiocpc.load(run_dir)`; `.model` is the underlying `CPCModel`."""

    def __init__(self, run: RestoredRun):
        self.run = run

    @property
    def model(self) -> CPCModel:
        return self.run.model

    @property
    def config(self) -> Config:
        return self.run.config

    @property
    def sample_rate(self) -> int:
        """The rate the model works at; inputs at other rates are resampled to it."""
        return self.run.config.data.sample_rate

    @property
    def device(self) -> torch.device:
        return self.run.device

    @property
    def crop_samples(self) -> int:
        """Samples (at `sample_rate`) per crop in `embed_files` / `embed_waveforms`."""
        return crop_length(self.run.config)

    def __repr__(self) -> str:
        return f"CPCEmbedder({self.run.name!r}, device={self.device}, sample_rate={self.sample_rate})"

    @torch.inference_mode()
    def embed(self, waveform: Union[Waveform, Sequence[Waveform]], sample_rate: int,
              channels_first: bool = False) -> Features:
        """Frame-level features of one waveform or a batch, always with a batch axis."""
        items, _ = _as_list(waveform)
        waves = [self._prepare(to_mono(w, sample_rate, self.sample_rate, channels_first))
                 for w in items]
        lengths = torch.tensor([w.size for w in waves])
        padded = np.zeros((len(waves), int(lengths.max())), dtype=np.float32)
        for row, wave in enumerate(waves):
            padded[row, : wave.size] = wave
        z, c, frames = self.model.extract_features(torch.from_numpy(padded).to(self.device),
                                                   lengths.to(self.device))
        assert frames is not None  # extract_features counts frames when given lengths
        return Features(z.float().cpu(), c.float().cpu(), frames.cpu())

    @torch.inference_mode()
    def hidden_states(self, waveform: Union[Waveform, Sequence[Waveform]], sample_rate: int,
                      channels_first: bool = False) -> HiddenStates:
        """Every layer's output for one waveform or a batch (zero-padded to the longest), on
        the CPU: `.names`, `.hidden_states` (one [B, T, D] per layer), `.frame_rate(name)`,
        `.lengths[name]` (valid frames per item), `.as_dict()` (s3prl's layout)."""
        items, _ = _as_list(waveform)
        waves = [to_mono(w, sample_rate, self.sample_rate, channels_first) for w in items]
        waves = [self._prepare(w) for w in waves]
        lengths = torch.tensor([w.size for w in waves])
        padded = np.zeros((len(waves), int(lengths.max())), dtype=np.float32)
        for row, wave in enumerate(waves):
            padded[row, : wave.size] = wave
        states = self.model.hidden_states(torch.from_numpy(padded).to(self.device), lengths.to(self.device))
        states.hidden_states = [x.float().cpu() for x in states.hidden_states]
        states.lengths = {k: v.cpu() for k, v in states.lengths.items()}
        return states

    def embed_waveforms(self, waveforms: Sequence[Waveform], sample_rate: Optional[int] = None, *,
                        crops: Crops = 5, kind: str = "context", seed: int = 0,
                        batch_size: int = 64, channels_first: bool = False,
                        on_short: str = "pad", pool: str = "mean") -> np.ndarray:
        """Pooled embeddings, one row per waveform: the mean of `crops` crop embeddings
        (random, seeded; or "all" consecutive crops), each crop's frames pooled by `pool`
        for the pooled kinds (e.g. `kind="zc", pool="meanstd"`). float32 [n, dim]. A waveform shorter
        than one crop is padded with silence (warned about); `on_short="error"` refuses it."""
        rate = self.sample_rate if sample_rate is None else sample_rate
        waves = [self._prepare(to_mono(w, rate, self.sample_rate, channels_first))
                 for w in waveforms]
        return self._pooled(waves, [str(i) for i in range(len(waves))], crops, kind, seed, batch_size,
                            on_short=on_short, pool=pool)

    def embed_files(self, paths: Sequence[str | os.PathLike], *, crops: Crops = 5,
                    kind: str = "context", seed: int = 0, batch_size: int = 64,
                    on_short: str = "pad", pool: str = "mean") -> np.ndarray:
        """Pooled embeddings, one row per audio file (read through the decoded-audio cache);
        crops are seeded by file name, as in `audiocpc embed`. float32 [n, dim]. A file
        shorter than one crop is padded with silence (warned about; `audiocpc embed` skips
        it, since it writes one row per crop); `on_short="error"` refuses it."""
        cache = AudioCache(self.config.data.cache_dir)
        waves = [self._prepare(cache.load(os.fspath(p), self.sample_rate)) for p in paths]
        return self._pooled(waves, [Path(p).name for p in paths], crops, kind, seed, batch_size,
                            names=[str(p) for p in paths], on_short=on_short, pool=pool)

    def _prepare(self, wave: np.ndarray) -> np.ndarray:
        """A recording as the model was trained on it (data.standardize: scaled as a whole)."""
        return standardize(wave) if self.config.data.standardize else wave

    def _pooled(self, waves: list[np.ndarray], keys: list[str], crops: Crops, kind: str, seed: int,
                batch_size: int, names: Optional[list[str]] = None,
                on_short: str = "pad", pool: str = "mean") -> np.ndarray:
        check_options(kind, crops, batch_size, pool=pool)
        if on_short not in ("pad", "error"):
            raise AudiocpcError(f"on_short: expected 'pad' or 'error', got {on_short!r}")
        if not waves:
            return np.zeros((0, embedding_dim(self.config, kind, pool)), dtype=np.float32)
        crop = self.crop_samples
        short = [(names or keys)[i] for i, w in enumerate(waves) if w.shape[0] < crop]
        if short and on_short == "error":
            raise AudiocpcError(
                f"{len(short)} input(s) shorter than one crop ({crop / self.sample_rate:.3f} s at "
                f"{self.sample_rate} Hz): {', '.join(short[:5])}")
        if short:
            # One row per input must come back (scikit-learn pairs rows with labels), so
            # where the CLI skips a short file, the API pads it with silence and says so.
            log.warning("%d input(s) shorter than one crop (%.3f s at %d Hz) are padded with "
                        "silence to one crop (on_short='error' refuses them): %s", len(short),
                        crop / self.sample_rate, self.sample_rate, ", ".join(short[:5]))
            waves = [w if w.shape[0] >= crop else np.pad(w, (0, crop - w.shape[0])) for w in waves]
        starts = plan_crops([w.shape[0] for w in waves], keys, crop, crops, seed,
                            crop_grid(self.model))
        rows, _ = embed_crops(self.model, waves, starts, crop, kind, batch_size, pool=pool)
        return pool_by_file(rows, [len(s) for s in starts])


def embed_folder(run_dir_or_model: Any, data_dir: str | os.PathLike, split: str, *,
                 out: str | os.PathLike = "results", random_init: bool = False,
                 **options: Any) -> EmbeddingSplit:
    """`audiocpc embed` from Python: embed every audio file below `data_dir` and write
    `<out>/embeddings/<run name>/<split>.{npy,csv,json}` (`<run name>_random` with
    `random_init`). `run_dir_or_model` is a run folder or a model from `audiocpc.load`; the
    other options are those of `audiocpc.evaluation.embed.embed_folder` (crops, kind, seed,
    batch_size, label_mode, label_pattern, labels_csv, device, progress)."""
    from audiocpc.evaluation import embed as embedding
    from audiocpc.experiments.layout import ResultsLayout
    from audiocpc.training.checkpoint import CHECKPOINT_NAME
    from audiocpc.training.run_folder import RunFolder

    source = run_dir_or_model.run if isinstance(run_dir_or_model, CPCEmbedder) else run_dir_or_model
    run_dir = source.run_dir if isinstance(source, RestoredRun) else Path(source)
    if not run_dir.is_dir() and run_dir.name == CHECKPOINT_NAME:  # the checkpoint itself was given
        run_dir = run_dir.parent
    folder = ResultsLayout(out).embeddings(RunFolder(run_dir).name, "random" if random_init else "cpc")
    return embedding.embed_folder(source, os.fspath(data_dir), split, folder=folder, random_init=random_init,
                                  **options)


def load(run_dir: str | os.PathLike, device: str | torch.device = "auto",
         random_init: bool = False) -> CPCEmbedder:
    """The trained model of a run folder (e.g. results/cpc/<name>), rebuilt from its
    checkpoint alone, in eval mode on CUDA when available. `random_init=True`: the same
    architecture with its seeded initial weights (the untrained baseline)."""
    return CPCEmbedder(restore_run(run_dir, device=device, random_init=random_init))


class CPCTransformer(TransformerMixin, BaseEstimator):
    """scikit-learn transformer: a list of waveforms (or audio file paths) -> pooled CPC
    embeddings [n, dim]. `fit` does nothing (the model is already trained)."""

    def __init__(self, run_dir: str | os.PathLike, kind: str = "context",
                 sample_rate: Optional[int] = None, crops: Crops = 5, seed: int = 0,
                 batch_size: int = 64, device: str = "auto", pool: str = "mean"):
        self.run_dir = run_dir
        self.kind = kind
        self.pool = pool
        self.sample_rate = sample_rate
        self.crops = crops
        self.seed = seed
        self.batch_size = batch_size
        self.device = device

    def _embedder(self) -> CPCEmbedder:
        wanted = (str(self.run_dir), str(self.device))
        cached = self.__dict__.get("_loaded")
        if cached is None or cached[0] != wanted:
            cached = (wanted, load(self.run_dir, device=self.device))
            self.__dict__["_loaded"] = cached
        return cached[1]

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_loaded", None)  # reloaded from the run folder on first use
        return state

    def fit(self, X: Any, y: Any = None) -> "CPCTransformer":
        return self

    def transform(self, X: Sequence[Any]) -> np.ndarray:
        embedder = self._embedder()
        options: dict[str, Any] = dict(crops=self.crops, kind=self.kind, seed=self.seed,
                                       batch_size=self.batch_size, pool=self.pool)
        if len(X) and all(isinstance(x, (str, os.PathLike)) for x in X):
            return embedder.embed_files(list(X), **options)
        return embedder.embed_waveforms(list(X), self.sample_rate, **options)
