"""The per-run state of training: what a checkpoint must hold besides the model and the
optimizer for a resumed run to continue exactly as one that never stopped."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class EpochMeter:
    """Running sums for the current epoch (saved in checkpoints so resume is exact)."""

    loss_sum: float = 0.0
    accuracy_sums: list[float] = field(default_factory=list)
    steps: int = 0
    skipped: int = 0
    seconds: float = 0.0

    def add(self, loss: float, accuracy: list[float]) -> None:
        if not self.accuracy_sums:
            self.accuracy_sums = [0.0] * len(accuracy)
        self.loss_sum += loss
        self.accuracy_sums = [s + a for s, a in zip(self.accuracy_sums, accuracy)]
        self.steps += 1

    def as_dict(self) -> dict[str, Any]:
        return {"loss_sum": self.loss_sum, "accuracy_sums": list(self.accuracy_sums),
                "steps": self.steps, "skipped": self.skipped, "seconds": self.seconds}
