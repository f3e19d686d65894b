"""Encoders: waveform [B, S] -> z [B, L, z_dim], one z per frame.

In window mode the model cuts a crop into windows and pools each window's frames into one
z; in frame mode it keeps every frame. Every encoder exposes `output_length(samples)`.
"""

from __future__ import annotations

from typing import Literal, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from audiocpc.models.layers import ACTIVATION_TYPES, ChannelNorm, activation, norm1d
from audiocpc.models.registry import register

NormKind = Literal["none", "batch", "layer", "channel"]


def time_major_conv(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """`conv` (kernel twice its stride s, integer padding, a bias) on time-major x [B, L, C]
    -> [B, L', out]: output t reads input steps [t*s, t*s + 2s), two consecutive blocks of s
    steps; folding each block into the channels (space to depth) makes every output one row
    of [block t, block t+1] @ W, a single large matmul."""
    stride, pad = conv.stride[0], conv.padding[0]
    assert isinstance(pad, int)  # the convs are built with integer padding
    if pad:
        x = F.pad(x, (0, 0, pad, pad))
    batch, length, channels = x.shape
    out_len = (length - 2 * stride) // stride + 1
    blocks = x[:, : (out_len + 1) * stride].reshape(batch, out_len + 1, stride * channels)
    patches = torch.cat([blocks[:, :-1], blocks[:, 1:]], dim=2)  # [B, L', 2s*C]
    # weight [out, C, k] -> [k*C, out], rows ordered (tap, channel) like the patches
    weight = conv.weight.permute(2, 1, 0).reshape(-1, conv.out_channels)
    assert conv.bias is not None  # the convs are built with a bias
    x = torch.addmm(conv.bias, patches.reshape(-1, patches.shape[-1]), weight)
    return x.view(batch, out_len, -1)


@register("encoder", "conv1d")
class Conv1dEncoder(nn.Module):
    """Strided 1-D convolutions on the raw waveform, then a per-frame linear map to z_dim.

    With the reference settings a 588-sample window yields exactly one frame, so the linear
    map equals the reference's dense head on the flattened output.
    """

    def __init__(
        self,
        z_dim: int,
        sample_rate: int = 16000,
        strides: Sequence[int] = (5, 4, 2, 2, 2),
        kernels: Sequence[int] = (10, 8, 4, 4, 4),
        filters: Union[int, list[int]] = 512,
        padding: Optional[list[int]] = None,
        activation_fn: Literal["leaky_relu", "relu", "gelu", "tanh"] = "leaky_relu",
        norm: NormKind = "none",
        dropout: float = 0.0,
    ):
        super().__init__()
        strides, kernels = list(strides), list(kernels)
        if len(strides) != len(kernels):
            raise ValueError("strides and kernels must have the same length")
        channels = [filters] * len(strides) if isinstance(filters, int) else list(filters)
        if len(channels) != len(strides):
            raise ValueError("filters must be one number or one per conv layer")
        pads = [0] * len(strides) if padding is None else list(padding)
        self.strides, self.kernels, self.pads = strides, kernels, pads
        layers: list[nn.Module] = []
        in_ch = 1
        for out_ch, k, s, p in zip(channels, kernels, strides, pads):
            layers += [nn.Conv1d(in_ch, out_ch, k, stride=s, padding=p), norm1d(norm, out_ch),
                       activation(activation_fn)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_ch = out_ch
        self.convs = nn.Sequential(*layers)
        self.head = nn.Linear(in_ch, z_dim)
        self.z_dim = z_dim
        # Kernels of twice the stride (the reference's and the CPC paper's) run as matmuls on
        # time-major activations: ~1.2-2x faster than oneDNN's conv1d on CPUs (see
        # benchmarks/README.md). Same parameters, same numbers; batch/layer norm keep conv1d.
        self.time_major = norm in ("none", "channel") and all(k == 2 * st for k, st in zip(kernels, strides))

    @property
    def downsampling(self) -> int:
        total = 1
        for s in self.strides:
            total *= s
        return total

    def output_length(self, samples: int) -> int:
        length = samples
        for k, s, p in zip(self.kernels, self.strides, self.pads):
            length = (length + 2 * p - k) // s + 1
        return length

    def layer_geometry(self) -> list[tuple[int, int, int]]:
        """Per conv block: (hop, first, span) in input samples: block output t reads the
        samples [hop * t + first, hop * t + first + span) (padding makes `first` negative)."""
        hop, first, span, out = 1, 0, 1, []
        for k, s, p in zip(self.kernels, self.strides, self.pads):
            hop, first, span = hop * s, first - hop * p, span + hop * (k - 1)
            out.append((hop, first, span))
        return out

    def layer_lengths(self, samples: int) -> list[int]:
        """Frames per conv block for an input of `samples` samples."""
        lengths, length = [], samples
        for k, s, p in zip(self.kernels, self.strides, self.pads):
            length = (length + 2 * p - k) // s + 1
            lengths.append(length)
        return lengths

    def layer_outputs(self, waves: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """The output of every conv block (after its norm and activation) and z, each
        [B, L_layer, dim]: the per-layer features of `CPCModel.hidden_states`."""
        outputs: list[tuple[str, torch.Tensor]] = []
        x = waves.unsqueeze(1)
        block = 0
        for layer in self.convs:
            x = layer(x)
            if isinstance(layer, ACTIVATION_TYPES):  # a block ends with its activation
                block += 1
                outputs.append((f"encoder.conv{block}", x.transpose(1, 2)))
        outputs.append(("z", self.head(x.transpose(1, 2))))
        return outputs

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        # Traced for export: plain convolutions, whose shapes follow any input length
        # (the matmul path's reshapes would freeze the traced length).
        if self.time_major and not torch.jit.is_tracing():
            return self.head(self._time_major_features(waves))
        features = self.convs(waves.unsqueeze(1))  # [B, C, L]
        return self.head(features.transpose(1, 2))  # [B, L, z_dim]

    def _time_major_features(self, waves: torch.Tensor) -> torch.Tensor:
        """The conv stack on [B, L, C] activations, each conv one matmul (`time_major_conv`)."""
        x = waves.unsqueeze(-1)  # [B, S, 1]
        for layer in self.convs:
            if isinstance(layer, nn.Conv1d):
                x = time_major_conv(x, layer)
            elif isinstance(layer, ChannelNorm):
                mean = x.mean(dim=-1, keepdim=True)
                var = x.var(dim=-1, keepdim=True, unbiased=False)
                x = (x - mean) * torch.rsqrt(var + layer.eps) * layer.weight.view(-1) + layer.bias.view(-1)
            else:  # activation, dropout, identity: elementwise
                x = layer(x)
        return x
