"""Every layer's output, s3prl-style: `CPCModel.hidden_states(waves)` -> `HiddenStates`.

Layers are named by where they sit: `encoder.conv1` .. `encoder.convN` (and
`encoder.logmel` for the log-mel front end), `z`, the context network's inner layers
(`context.layer1`.., `context.block1`..) and `c`. Each is `[B, T_layer, dim]` with its own
frame rate. Frame t of a layer reads the input samples `[hop * t + first, hop * t + first + span)`,
so its centre is `hop * t + first + (span - 1) / 2` samples (what HEAR timestamps need).

In window mode every layer is pooled per window the way z is (the mean of the window's
frames), so all layers have one vector per window (hop = the window length).
Encoders and context networks without `layer_outputs` contribute only z and c.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol

import torch
from torch import nn


@dataclass
class HiddenStates:
    """names[i] is the name of hidden_states[i] ([B, T_i, D_i]); hops, firsts and spans are
    in samples at `sample_rate`; lengths[name] is the valid frames per item (None when the
    inputs were not padded)."""

    names: list[str]
    hidden_states: list[torch.Tensor]
    hops: dict[str, int]
    firsts: dict[str, int]
    spans: dict[str, int]
    sample_rate: int
    lengths: dict[str, torch.Tensor] = field(default_factory=dict)

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.names:
            raise KeyError(f"no layer named {name!r}; the layers are: {', '.join(self.names)}")
        return self.hidden_states[self.names.index(name)]

    def frame_rate(self, name: str) -> float:
        """Frames per second of layer `name`."""
        return self.sample_rate / self.hops[name]

    def centres(self, name: str, frames: Optional[int] = None) -> torch.Tensor:
        """Centre of each frame of layer `name`, in samples (float64)."""
        frames = self[name].shape[1] if frames is None else frames
        t = torch.arange(frames, dtype=torch.float64)
        return self.hops[name] * t + self.firsts[name] + (self.spans[name] - 1) / 2

    def as_dict(self) -> dict:
        """s3prl's upstream layout: hidden_states (a list, one [B, T, D] per layer), the names,
        and the downsample rate (input samples per frame) of each layer."""
        return {"hidden_states": list(self.hidden_states), "names": list(self.names),
                "downsample_rates": dict(self.hops), "frame_rates": {n: self.frame_rate(n) for n in self.names}}


class LayeredModel(Protocol):
    """What `hidden_states` reads of a CPCModel (models/cpc.py imports this module, so it
    cannot be named here)."""

    sample_rate: int
    window: Optional[int]
    encoder: nn.Module
    context: nn.Module

    def frames_for(self, lengths: torch.Tensor) -> torch.Tensor: ...


def _layer_outputs(module: nn.Module) -> Optional[Callable[[torch.Tensor], list[tuple[str, torch.Tensor]]]]:
    """The module's `layer_outputs` method, if it has one."""
    return getattr(module, "layer_outputs") if hasattr(module, "layer_outputs") else None


def _encoder_layers(encoder: torch.nn.Module, waves: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    layer_outputs = _layer_outputs(encoder)
    if layer_outputs is not None:
        return layer_outputs(waves)
    return [("z", encoder(waves))]


def hidden_states(model: LayeredModel, waves: torch.Tensor,
                  lengths: Optional[torch.Tensor] = None) -> HiddenStates:
    """Every layer of a CPCModel for waves [B, S] (lengths [B]: valid samples of zero-padded
    rows). It uses the model's encoder, context, window, sample_rate and frames_for."""
    batch, samples = waves.shape
    hops: dict[str, int] = {}
    firsts: dict[str, int] = {}
    spans: dict[str, int] = {}
    valid: dict[str, torch.Tensor] = {}
    if model.window is not None:
        window = model.window
        windows = samples // window
        if windows == 0:
            raise ValueError(f"input of {samples} samples is shorter than one window ({window})")
        rows = waves[:, : windows * window].reshape(batch * windows, window)
        encoder_layers = [(name, x.mean(dim=1).view(batch, windows, -1))
                          for name, x in _encoder_layers(model.encoder, rows)]
        for name, _ in encoder_layers:
            hops[name], firsts[name], spans[name] = window, 0, window
            if lengths is not None:
                valid[name] = torch.div(lengths, window, rounding_mode="floor")
    else:
        encoder_layers = _encoder_layers(model.encoder, waves)
        geometry = getattr(model.encoder, "layer_geometry", None)
        geometry = geometry() if callable(geometry) else []
        counts = getattr(model.encoder, "layer_lengths", None)
        names = [name for name, _ in encoder_layers]
        for index, (name, x) in enumerate(encoder_layers):
            if name == "z" and geometry:  # z is a per-frame map of the last block
                hop, first, span = geometry[-1]
            elif index < len(geometry):
                hop, first, span = geometry[index]
            else:  # an encoder that does not describe itself: spread the frames evenly
                hop = max(1, round(samples / max(x.shape[1], 1)))
                first, span = 0, hop
            hops[name], firsts[name], spans[name] = hop, first, span
            if lengths is not None:
                if name == "z":
                    valid[name] = model.frames_for(lengths)
                elif callable(counts):
                    per_item = [counts(int(n))[names.index(name)] for n in lengths.tolist()]
                    valid[name] = torch.tensor(per_item, device=lengths.device)
    z = dict(encoder_layers)["z"]
    context = model.context
    context_outputs = _layer_outputs(context)
    context_layers = context_outputs(z) if context_outputs is not None else [("c", context(z))]
    for name, _ in context_layers:
        hops[name], firsts[name], spans[name] = hops["z"], firsts["z"], spans["z"]
        if "z" in valid:
            valid[name] = valid["z"]
    layers = encoder_layers + context_layers
    return HiddenStates([n for n, _ in layers], [x for _, x in layers], hops, firsts, spans,
                        model.sample_rate, valid)


POOLS: tuple[str, ...] = ("mean", "meanstd", "meanmax", "last")


def pool_frames(frames: torch.Tensor, pool: str) -> torch.Tensor:
    """[n, T, D] -> [n, D] (mean, last) or [n, 2D] (meanstd: mean then standard deviation;
    meanmax: mean then maximum), over the T frames."""
    if pool == "mean":
        return frames.mean(dim=1)
    if pool == "meanstd":
        # two passes (the mean, then the mean square of the deviations): the same standard
        # deviation as Tensor.std to float rounding, ~10x faster on the CPU, where std's
        # one-pass reduction over a middle dimension was a quarter of embedding `clips`
        mean = frames.mean(dim=1, keepdim=True)
        spread = (frames - mean).square().mean(dim=1).sqrt()
        return torch.cat([mean[:, 0], spread], dim=1)
    if pool == "meanmax":
        return torch.cat([frames.mean(dim=1), frames.amax(dim=1)], dim=1)
    if pool == "last":
        return frames[:, -1]
    raise ValueError(f"unknown pooling {pool!r}; choose {', '.join(POOLS)}")
