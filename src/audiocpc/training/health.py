"""Is the run learning? A loss at chance or collapsed embeddings, said in one message with
the likely causes, so that a dead run is reported instead of trained for hours."""

from __future__ import annotations

import math
from typing import Optional

CHANCE_MARGIN = 0.01  # a loss within 1 % of ln(1 + negatives) has learned nothing
COLLAPSED_STD = 1e-4  # z whose spread across the batch is below this has collapsed


def chance_loss(candidates: int) -> float:
    """The InfoNCE loss of a model that scores all 1 + M candidates alike: ln(1 + M)."""
    return math.log(candidates)


def dead_run_problem(step: int, epoch_loss: float, candidates: int, z_std: float,
                     standardized: bool, encoder_norm: Optional[str], lr: float) -> Optional[str]:
    """One line saying why the run looks dead (and what to try), or None if it learns."""
    chance = chance_loss(candidates)
    at_chance = math.isfinite(epoch_loss) and epoch_loss >= (1 - CHANCE_MARGIN) * chance
    collapsed = math.isfinite(z_std) and z_std < COLLAPSED_STD
    if not (at_chance or collapsed):
        return None
    what = (f"the loss is {epoch_loss:.4f}, within {CHANCE_MARGIN:.0%} of chance "
            f"(ln {candidates} = {chance:.4f})" if at_chance else
            f"the encoder's z has collapsed (spread {z_std:.2e} across the batch)")
    causes = []
    if not standardized:
        causes.append("a quiet recording level (set data.standardize=true)")
    if encoder_norm in (None, "none"):
        causes.append("no normalisation in the encoder (set model.encoder.norm=channel)")
    causes.append(f"the learning rate (train.lr={lr:g}: try 10x lower or higher)")
    causes.append("negatives too easy or too hard (loss.negatives.policy / count)")
    return (f"after {step} steps the run is not learning: {what}. Likely causes: "
            + "; ".join(causes) + ". train.on_dead_run=stop stops such runs, "
            "train.dead_run_steps=0 turns this check off.")
