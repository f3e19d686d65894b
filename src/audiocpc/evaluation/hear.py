"""The HEAR API (Holistic Evaluation of Audio Representations) over any audiocpc model.

    import audiocpc.hear as hear
    model = hear.load_model("results/cpc/mymodel")            # a run folder or an export
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)   # [n, T, D], [n, T] ms
    scene = hear.get_scene_embeddings(audio, model)             # [n, D]

`audio` is float32 [n_sounds, n_samples] in [-1, 1] at `model.sample_rate`, which is one of
HEAR's rates (16000, 22050, 44100, 48000). A CPC model trained at another rate (4410 Hz,
8000 Hz) is wrapped at the nearest HEAR rate above its own (16000 Hz for both; choose with
`load_model(..., sample_rate=22050)`), and the wrapper resamples to the model's rate (soxr)
inside. Audio that is known to be at another rate is refused (HEAR's rule): pass
`sample_rate=` to the embedding functions to have that checked.

Timestamps are the centres of the frames, in milliseconds: frame mode at the encoder's frame
rate (10 ms for cpc_paper), window mode at one frame per window with the centre of each
window. When that hop exceeds `hop_ms` (default 50 ms, HEAR's limit), the audio is also run
shifted by fractions of a hop and the frames are interleaved (overlapping windows), so the
hop becomes hop / ceil(hop / hop_ms): 44.4 ms for the 133 ms windows of 1dconv_gru. The end
is zero-padded so that the last frame's centre is within one hop of the end. Timestamp-level
outputs are any layer of `CPCModel.hidden_states` (`layer="c"` by default, `"z"`,
`"encoder.conv3"`, or several joined with commas, concatenated); scene embeddings pool them
over time (`scene_pool="mean"`, `"meanstd"`, `"meanmax"` or `"last"`).
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Optional, Union

import numpy as np
import soxr
import torch
from torch import nn

from audiocpc.errors import ConfigError
from audiocpc.models import CPCModel
from audiocpc.models.hidden import POOLS, pool_frames
from audiocpc.training.restore import restore_run

HEAR_SAMPLE_RATES: tuple[int, ...] = (16000, 22050, 44100, 48000)
MAX_HOP_MS = 50.0  # HEAR's validator warns above this hop
SCENE_POOLS = POOLS
Audio = Union[torch.Tensor, np.ndarray]


def default_hear_rate(model_rate: int) -> int:
    """The HEAR rate a model is wrapped at: the nearest allowed rate at or above its own
    (so resampling never throws away what the model could hear), 48000 above that."""
    return next((rate for rate in HEAR_SAMPLE_RATES if rate >= model_rate), HEAR_SAMPLE_RATES[-1])


class HearModel(nn.Module):
    """A CPC model behind the HEAR API. `sample_rate`, `scene_embedding_size` and
    `timestamp_embedding_size` are HEAR's attributes; `forward(audio)` gives the timestamp
    embeddings and timestamps."""

    def __init__(self, model: CPCModel, name: str, sample_rate: Optional[int] = None,
                 layer: str = "c", hop_ms: Optional[float] = MAX_HOP_MS, scene_pool: str = "mean",
                 batch_size: int = 16, prepare: Optional[Callable[[np.ndarray], np.ndarray]] = None):
        super().__init__()
        self.model = model.eval()
        self.prepare = prepare  # per sound, at the model's rate, as recordings were in training
        self.name = name
        self.model_rate = int(model.sample_rate)
        rate = default_hear_rate(self.model_rate) if sample_rate is None else int(sample_rate)
        if rate not in HEAR_SAMPLE_RATES:
            raise ConfigError(f"sample_rate: {rate} Hz is not a HEAR rate; choose one of "
                              f"{', '.join(map(str, HEAR_SAMPLE_RATES))}")
        if scene_pool not in SCENE_POOLS:
            raise ConfigError(f"scene_pool: unknown pooling {scene_pool!r}; choose {', '.join(SCENE_POOLS)}")
        if batch_size < 1:
            raise ConfigError(f"batch_size: must be at least 1, got {batch_size}")
        self.sample_rate = rate
        self.layers = [part.strip() for part in layer.split(",") if part.strip()]
        self.scene_pool = scene_pool
        self.batch_size = batch_size
        probe = self._probe_states()
        unknown = [name for name in self.layers if name not in probe.names]
        if not self.layers or unknown:
            raise ConfigError(f"layer: no layer named {', '.join(unknown) or repr(layer)}; this model's "
                              f"layers are: {', '.join(probe.names)}")
        geometry = {(probe.hops[n], probe.firsts[n], probe.spans[n]) for n in self.layers}
        if len(geometry) > 1:
            raise ConfigError(f"layer: {', '.join(self.layers)} have different frame rates and "
                              "cannot be concatenated; choose layers with the same hop (z and c do)")
        self.hop, self.first, self.span = geometry.pop()
        self.timestamp_embedding_size = sum(probe[n].shape[-1] for n in self.layers)
        self.scene_embedding_size = self.timestamp_embedding_size * (2 if scene_pool in ("meanstd", "meanmax") else 1)
        native_ms = 1000.0 * self.hop / self.model_rate
        parts = 1 if hop_ms is None or native_ms <= hop_ms else math.ceil(native_ms / hop_ms - 1e-9)
        # start offsets (model samples) of the interleaved runs that make the hop finer
        self.shifts = sorted({int(round(i * self.hop / parts)) for i in range(parts)})

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def hop_ms(self) -> float:
        """The spacing of the timestamps (on average, when shifted runs interleave)."""
        return 1000.0 * self.hop / self.model_rate / len(self.shifts)

    def _probe_states(self) -> Any:
        samples = max(self.model.window or 0, 2 * self.model_rate)  # 2 s: enough for any encoder
        with torch.no_grad():
            return self.model.hidden_states(torch.zeros(1, samples, device=self.device))

    def check_rate(self, sample_rate: Optional[int]) -> None:
        if sample_rate is not None and int(sample_rate) != self.sample_rate:
            raise ConfigError(
                f"audio at {int(sample_rate)} Hz, but this HEAR model takes {self.sample_rate} Hz "
                f"(it resamples to its own {self.model_rate} Hz inside); resample the audio to "
                f"{self.sample_rate} Hz, or load_model(..., sample_rate={int(sample_rate)}) if that "
                f"is one of {', '.join(map(str, HEAR_SAMPLE_RATES))}")

    def _to_model_rate(self, audio: torch.Tensor) -> torch.Tensor:
        if self.prepare is not None:
            rows = audio.detach().float().cpu().numpy()
            if self.sample_rate != self.model_rate:
                rows = self._resample(rows)
            return torch.from_numpy(np.stack([self.prepare(row) for row in rows]).astype(np.float32))
        if self.sample_rate == self.model_rate:
            return audio.float()
        return torch.from_numpy(self._resample(audio.detach().float().cpu().numpy()))

    def _resample(self, rows: np.ndarray) -> np.ndarray:
        # soxr takes [samples, channels]: every sound of the batch is one channel
        out = soxr.resample(np.ascontiguousarray(rows.T), self.sample_rate, self.model_rate, quality="HQ")
        return np.ascontiguousarray(np.asarray(out, dtype=np.float32).reshape(-1, rows.shape[0]).T)

    @torch.no_grad()
    def forward(self, audio: Audio) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings float32 [n, T, D], timestamps float32 [n, T] in ms)."""
        audio = torch.as_tensor(audio)
        if audio.ndim != 2:
            raise ConfigError(f"audio: expected [n_sounds, n_samples], got shape {tuple(audio.shape)}")
        if not torch.is_floating_point(audio):
            raise ConfigError(f"audio: expected float32 samples in [-1, 1], got {audio.dtype}")
        if audio.shape[0] == 0:
            return (torch.zeros(0, 0, self.timestamp_embedding_size), torch.zeros(0, 0))
        waves = self._to_model_rate(audio)
        samples = waves.shape[1]
        padded = torch.nn.functional.pad(waves, (0, self._end_padding(samples)))
        chunks, centres = [], None
        for first in range(0, waves.shape[0], self.batch_size):
            batch = padded[first : first + self.batch_size].to(self.device)
            frames, centres = self._interleaved(batch, samples)
            chunks.append(frames.float().cpu())
        assert centres is not None
        embeddings = torch.cat(chunks)
        stamps = (centres / self.model_rate * 1000.0).float()
        return embeddings, stamps.unsqueeze(0).expand(embeddings.shape[0], -1).contiguous()

    def _end_padding(self, samples: int) -> int:
        """Zeros to append so that, in every shifted run, the last frame whose centre lies in
        the audio is complete (as few as possible: the log-mel front end standardises over them)."""
        centre_offset = self.first + (self.span - 1) / 2
        needed = 0
        for shift in self.shifts:
            last = math.floor((samples - 1 - shift - centre_offset) / self.hop)
            needed = max(needed, shift + self.hop * max(last, 0) + self.first + self.span - samples)
        return max(needed, 0)

    def _interleaved(self, batch: torch.Tensor, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames of every shifted run whose centre lies in the audio, in time order."""
        frames, centres = [], []
        for shift in self.shifts:
            states = self.model.hidden_states(batch[:, shift:])
            layer = self.layers[0]
            centre = states.centres(layer) + shift
            keep = centre <= samples - 1
            if not keep.any() and shift == self.shifts[0]:
                keep[0] = True  # a sound shorter than half a frame still gets one frame
            joined = torch.cat([states[name] for name in self.layers], dim=-1)
            frames.append(joined[:, keep.to(joined.device)])
            centres.append(centre[keep])
        all_centres = torch.cat(centres)
        order = torch.argsort(all_centres, stable=True)
        return torch.cat(frames, dim=1)[:, order.to(batch.device)], all_centres[order]

    def __repr__(self) -> str:
        return (f"HearModel({self.name!r}, sample_rate={self.sample_rate}, model rate {self.model_rate} Hz, "
                f"layers {self.layers}, hop {self.hop_ms:.2f} ms, scene_pool={self.scene_pool!r})")


def load_model(model_file_path: str | os.PathLike = "", **options: Any) -> HearModel:
    """HEAR's entry point: a run folder (results/cpc/<name>), its checkpoint.pt, or a folder
    written by `audiocpc export`. Options: sample_rate (a HEAR rate; default the nearest at or
    above the model's), layer ("c"; see hidden_states names; commas concatenate), hop_ms (50;
    None = the native hop), scene_pool ("mean"), batch_size (16), device ("auto"),
    random_init (False: True gives the untrained baseline)."""
    if not str(model_file_path):
        raise ConfigError("load_model: give model_file_path, a run folder (results/cpc/<name>) or a "
                          "folder written by `audiocpc export`")
    allowed = {"sample_rate", "layer", "hop_ms", "scene_pool", "batch_size", "device", "random_init"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(f"load_model: unknown option {unknown[0]!r}; the options are {', '.join(sorted(allowed))}")
    device = options.pop("device", "auto")
    random_init = bool(options.pop("random_init", False))
    run = restore_run(model_file_path, device=device, random_init=random_init)
    return HearModel(run.model, run.name, prepare=recording_preparation(run.config), **options)


def recording_preparation(config: Any) -> Optional[Callable[[np.ndarray], np.ndarray]]:
    """What training did to each whole recording before cropping it: `data.standardize`
    (zero mean, unit variance); None when it did nothing."""
    if not config.data.standardize:
        return None
    from audiocpc.data import audio

    return audio.standardize


def get_timestamp_embeddings(audio: Audio, model: HearModel, sample_rate: Optional[int] = None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings float32 [n, T, timestamp_embedding_size], timestamps float32 [n, T] in ms,
    frame centres). `sample_rate`, when given, must be the model's (HEAR refuses other rates)."""
    model.check_rate(sample_rate)
    return model(audio)


def get_scene_embeddings(audio: Audio, model: HearModel, sample_rate: Optional[int] = None) -> torch.Tensor:
    """float32 [n, scene_embedding_size]: the timestamp embeddings pooled over time."""
    embeddings, _ = get_timestamp_embeddings(audio, model, sample_rate)
    if embeddings.shape[0] == 0:
        return torch.zeros(0, model.scene_embedding_size)
    return pool_frames(embeddings, model.scene_pool).float()
