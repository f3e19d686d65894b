"""Similarities: score predictions [..., D] against a bank of candidates [M, D] -> [..., M].

Scoring against one shared bank (a matmul) and then gathering the wanted candidates avoids
materialising a copy of the candidates for every prediction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from audiocpc.models.registry import register


@register("similarity", "dot")
class DotSimilarity(nn.Module):
    def __init__(self, dim: int):
        super().__init__()

    def forward(self, predictions: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
        return predictions @ bank.transpose(0, 1)


@register("similarity", "cosine")
class CosineSimilarity(nn.Module):
    """Cosine similarity divided by a temperature (0.1 is a common choice)."""

    def __init__(self, dim: int, temperature: float = 0.1):
        super().__init__()
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        self.temperature = temperature

    def forward(self, predictions: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
        return F.normalize(predictions, dim=-1) @ F.normalize(bank, dim=-1).transpose(0, 1) / self.temperature


@register("similarity", "bilinear")
class BilinearSimilarity(nn.Module):
    """prediction^T W z with a learned W (initialised to the identity)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.eye(dim))

    def forward(self, predictions: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
        return (predictions @ self.weight) @ bank.transpose(0, 1)
