"""Small building blocks shared by the components: activations, normalisations and the
causal attention mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"leaky_relu": nn.LeakyReLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}
ACTIVATION_TYPES = tuple(ACTIVATIONS.values())  # a conv block ends with one of these


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation '{name}'; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def causal_mask(length: int, device: torch.device) -> torch.Tensor:
    """Additive attention mask [length, length]: step t sees steps 1..t (-inf above the
    diagonal), made on the device of the tensor it masks."""
    return torch.triu(torch.full((length, length), float("-inf"), device=device), diagonal=1)


class ChannelNorm(nn.Module):
    """Normalise each time step across channels (CPC_audio's stable choice): [B, C, ...]."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, channels, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1))
        self.eps = eps
        self.channels = channels  # a plain int: a traced shape would make ONNX export fail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # layer_norm over the channels moved last: the same statistics (biased variance,
        # eps inside the root) to float rounding, 2-9x faster on the CPU than mean and var
        # reduced over dimension 1 (benchmarks/README.md, embedding speed)
        last = x.dim() - 1  # explicit, positive dimensions: ONNX rejects movedim's negative ones
        out = F.layer_norm(x.permute(0, *range(2, last + 1), 1), (self.channels,), self.weight.view(-1),
                           self.bias.view(-1), self.eps)
        return out.permute(0, last, *range(1, last))


def norm1d(kind: str, channels: int) -> nn.Module:
    """Normalisation for [B, C, L] feature maps."""
    if kind == "none":
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm1d(channels)
    if kind == "channel":
        return ChannelNorm(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)  # over channels and time, per example
    raise ValueError(f"unknown norm '{kind}'; choose none, batch, layer or channel")


def norm2d(kind: str, channels: int) -> nn.Module:
    """Normalisation for [B, C, F, T] feature maps."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return norm1d(kind, channels)  # none, channel and layer work on any trailing shape
