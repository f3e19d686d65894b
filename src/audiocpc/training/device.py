"""Which device a model runs on: one rule for training, restoring, embedding and the API."""

from __future__ import annotations

import torch


def local_cuda_index(local_rank: int) -> int:
    """The GPU of a process: one per process; more processes than GPUs share them (gloo)."""
    return local_rank % max(torch.cuda.device_count(), 1)
