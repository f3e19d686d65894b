"""InfoNCE on explicit candidate logits.

Logits are laid out as [B, P, K, 1 + M]: batch, prediction positions, future steps, and the
candidates with the positive always at index 0. The loss is cross-entropy on those logits
(computed in float32), so it never goes through exp() in probability space.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

POSITIVE_INDEX = 0


@dataclass
class InfoNCEOutput:
    loss: torch.Tensor  # scalar, weighted mean over steps
    step_loss: torch.Tensor  # [K]
    step_accuracy: torch.Tensor  # [K], fraction where the positive outscored every negative
    logits: torch.Tensor  # [B, P, K, 1 + M]


def candidate_logits(predictions: torch.Tensor, z: torch.Tensor, targets: torch.Tensor,
                     negatives: torch.Tensor, similarity: nn.Module) -> torch.Tensor:
    """Score each prediction against its positive (index 0) and its negatives.

    predictions [B, P, K, D]; z [B, L, D]; targets [B, P, K] and negatives [B, P, K, M] are
    flat indices into z.reshape(B * L, D). Returns logits [B, P, K, 1 + M].
    """
    bank = z.reshape(-1, z.shape[-1])
    scores = similarity(predictions, bank)  # [B, P, K, B*L]: one matmul, no candidate copies
    index = torch.cat([targets.unsqueeze(-1), negatives], dim=-1)
    return scores.gather(-1, index)


def info_nce(logits: torch.Tensor, step_weights: torch.Tensor) -> InfoNCEOutput:
    """Cross-entropy with the positive at index 0, averaged over batch and positions per step,
    then weighted over steps."""
    logits = logits.float()
    steps = logits.shape[-2]
    flat = logits.reshape(-1, logits.shape[-1])
    labels = torch.full((flat.shape[0],), POSITIVE_INDEX, dtype=torch.long, device=logits.device)
    per_item = F.cross_entropy(flat, labels, reduction="none").view(-1, steps)
    step_loss = per_item.mean(dim=0)
    positive = logits[..., POSITIVE_INDEX]
    best_negative = logits[..., POSITIVE_INDEX + 1 :].amax(dim=-1)
    step_accuracy = (positive > best_negative).float().reshape(-1, steps).mean(dim=0)
    loss = (step_loss * step_weights.to(step_loss)).sum()
    return InfoNCEOutput(loss=loss, step_loss=step_loss, step_accuracy=step_accuracy, logits=logits)
