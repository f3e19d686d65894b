"""A worked custom encoder for audiocpc (see README: "Plug in your own component").

Use it without editing audiocpc, from the repository root:

    PYTHONPATH=. audiocpc train --preset cpc_tiny --data DIR --name custom \
        --set 'model.encoder={type: "examples.my_encoder:MyEncoder", channels: 32}'
"""

from __future__ import annotations

import torch
from torch import nn


class MyEncoder(nn.Module):
    """Two strided convolutions on the raw waveform: one z every `hop` samples.

    The contract: the constructor takes the wiring arguments it wants (`z_dim`, and
    optionally `sample_rate` and `window_samples`) plus its own keyword arguments from the
    configuration; `forward(waves [B, S])` returns z [B, L, z_dim]; `output_length(S)`
    returns L (required in frame mode).
    """

    def __init__(self, z_dim: int, sample_rate: int = 16000, channels: int = 32, hop: int = 80):
        super().__init__()
        if hop % 4:
            raise ValueError(f"hop must be a multiple of 4 (got {hop})")
        self.hop = hop
        self.net = nn.Sequential(
            nn.Conv1d(1, channels, kernel_size=hop // 4, stride=hop // 4), nn.ReLU(),
            nn.Conv1d(channels, z_dim, kernel_size=4, stride=4),
        )

    def output_length(self, samples: int) -> int:
        return samples // self.hop

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        return self.net(waves.unsqueeze(1)).transpose(1, 2)  # [B, L, z_dim]
