"""Predictors: c [B, L, c_dim] -> predictions of z_{t+1..t+K}: [B, L, K, z_dim].

A predictor sees the whole context sequence and must be causal: its output at t may depend
on c_1..c_t only (the model picks the positions it scores: the last one in window mode,
every one in frame mode).
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import nn

from audiocpc.models.layers import activation, causal_mask
from audiocpc.models.registry import register


@register("predictor", "linear")
class LinearPredictor(nn.Module):
    """One linear map per future step (computed as one matmul)."""

    def __init__(self, c_dim: int, z_dim: int, steps: int, bias: bool = False):
        super().__init__()
        self.steps, self.z_dim = steps, z_dim
        self.proj = nn.Linear(c_dim, steps * z_dim, bias=bias)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.proj(c).unflatten(-1, (self.steps, self.z_dim))


@register("predictor", "mlp")
class MLPPredictor(nn.Module):
    """A shared hidden layer, then one linear map per future step (one matmul)."""

    def __init__(self, c_dim: int, z_dim: int, steps: int, hidden: int = 512, dropout: float = 0.0,
                 activation_fn: Literal["leaky_relu", "relu", "gelu", "tanh"] = "relu"):
        super().__init__()
        self.steps, self.z_dim = steps, z_dim
        self.net = nn.Sequential(nn.Linear(c_dim, hidden), activation(activation_fn),
                                 nn.Dropout(dropout), nn.Linear(hidden, steps * z_dim))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.net(c).unflatten(-1, (self.steps, self.z_dim))


@register("predictor", "transformer")
class TransformerPredictor(nn.Module):
    """A one-layer causal Transformer over the context sequence (CPC_audio's default
    predictor), then one linear map per future step. CPC_audio runs one such layer per
    step; here one layer is shared by the K steps, which costs K times less."""

    def __init__(self, c_dim: int, z_dim: int, steps: int, num_heads: int = 4,
                 dff: Optional[int] = None, dropout: float = 0.0):
        super().__init__()
        if c_dim % num_heads:
            raise ValueError(f"model.c_dim ({c_dim}) must be divisible by "
                             f"model.predictor.num_heads ({num_heads})")
        self.steps, self.z_dim = steps, z_dim
        self.block = nn.TransformerEncoderLayer(c_dim, num_heads, dim_feedforward=dff or 4 * c_dim,
                                                dropout=dropout, batch_first=True)
        self.proj = nn.Linear(c_dim, steps * z_dim)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        # No position codes: the causal mask already orders the steps, and c is the GRU's
        # (or Transformer's) output, which knows where it is.
        length = c.shape[1]
        x = self.block(c, src_mask=causal_mask(length, c.device), is_causal=True)
        return self.proj(x).unflatten(-1, (self.steps, self.z_dim))
