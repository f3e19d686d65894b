"""Process-group facts the training loop needs. A single process is rank 0 of 1."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """Average a metric over ranks (identity in a single process)."""
        if not self.enabled:
            return tensor
        reduced = tensor.detach().clone()
        torch.distributed.all_reduce(reduced)
        return reduced / self.world_size


SINGLE_PROCESS = DistributedContext()
