"""Predictors: c [B, P, c_dim] -> predictions of z_{t+1..t+K}: [B, P, K, z_dim]."""

from __future__ import annotations

import torch
from torch import nn

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
