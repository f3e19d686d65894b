"""The learning rate of every step: linear warm-up, then constant, cosine or linear decay.

The rate is a function of the step alone, so a resumed run sets exactly the rate an
uninterrupted run would have had."""

from __future__ import annotations

import math


def learning_rate(step: int, base_lr: float, total_steps: int, schedule: str = "cosine",
                  warmup_steps: int = 0, min_ratio: float = 0.1) -> float:
    """The rate for optimizer step `step` (0-based) of `total_steps`. The warm-up is at
    most a tenth of the run, so that a short run is not all warm-up."""
    warmup_steps = min(warmup_steps, total_steps // 10)
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    span = max(total_steps - warmup_steps - 1, 1)
    progress = min(max((step - warmup_steps) / span, 0.0), 1.0)
    if schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif schedule == "linear":
        factor = 1.0 - progress
    else:
        raise ValueError(f"unknown learning-rate schedule {schedule!r}")
    return base_lr * (min_ratio + (1.0 - min_ratio) * factor)
