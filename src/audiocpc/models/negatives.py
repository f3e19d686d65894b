"""Negative sampling: which encoded frames compete with the positive in InfoNCE.

Everything works on flat indices into the bank `z.reshape(B * L, D)`: the positive for the
prediction made at time t for step j of sequence b is `b * L + t + j`. Sampling is
vectorised (no Python loop per element) and uses torch's global generator, whose state the
checkpoint saves, so a resumed run draws the same negatives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

import torch

if TYPE_CHECKING:
    from audiocpc.config import Config

# policy name -> (needs labels, sampler). Exhaustive `other_sequences` (count = null) is
# the reference's: every other sequence's window at the target's step.
Sampler = Callable[..., torch.Tensor]
_POLICIES: dict[str, Sampler] = {}


def _policy(name: str) -> Callable[[Sampler], Sampler]:
    def decorator(fn: Sampler) -> Sampler:
        _POLICIES[name] = fn
        return fn

    return decorator


def policies() -> list[str]:
    return sorted(_POLICIES)


def target_indices(batch: int, length: int, positions: torch.Tensor, steps: int) -> torch.Tensor:
    """Flat bank index of every positive: [B, P, K]."""
    device = positions.device
    b = torch.arange(batch, device=device).view(batch, 1, 1)
    j = torch.arange(1, steps + 1, device=device).view(1, 1, steps)
    return b * length + positions.view(1, -1, 1) + j


@_policy("other_sequences")
def _other_sequences(targets: torch.Tensor, batch: int, length: int, count: Optional[int],
                     labels: Optional[torch.Tensor]) -> torch.Tensor:
    b = targets // length
    t = targets % length
    if count is None:  # every other sequence, at the same step as the target
        offsets = torch.arange(1, batch, device=targets.device)
    else:
        offsets = torch.randint(1, batch, (*targets.shape, count), device=targets.device)
        t = torch.randint(0, length, (*targets.shape, count), device=targets.device)
        return ((b.unsqueeze(-1) + offsets) % batch) * length + t
    return ((b.unsqueeze(-1) + offsets) % batch) * length + t.unsqueeze(-1)


@_policy("same_sequence")
def _same_sequence(targets: torch.Tensor, batch: int, length: int, count: Optional[int],
                   labels: Optional[torch.Tensor]) -> torch.Tensor:
    b = (targets // length).unsqueeze(-1)
    t = (targets % length).unsqueeze(-1)
    draw = torch.randint(0, length - 1, (*targets.shape, count), device=targets.device)
    draw = draw + (draw >= t).long()  # skip the positive's own step
    return b * length + draw


@_policy("batch")
def _any_in_batch(targets: torch.Tensor, batch: int, length: int, count: Optional[int],
                  labels: Optional[torch.Tensor]) -> torch.Tensor:
    draw = torch.randint(0, batch * length - 1, (*targets.shape, count), device=targets.device)
    return draw + (draw >= targets.unsqueeze(-1)).long()  # skip the positive itself


def sample_negatives(policy: str, targets: torch.Tensor, batch: int, length: int,
                     count: Optional[int], labels: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Flat bank indices of the negatives for each positive: [B, P, K, M]."""
    return _POLICIES[policy](targets, batch, length, count, labels)


def negative_policy_problems(config: "Config") -> list[str]:
    negatives = config.loss.negatives
    if negatives.policy not in _POLICIES:
        import difflib

        close = difflib.get_close_matches(negatives.policy, policies(), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return [f"loss.negatives.policy: unknown policy '{negatives.policy}'.{hint} "
                f"Choose one of: {', '.join(policies())}"]
    if negatives.count is None and negatives.policy != "other_sequences":
        return [f"loss.negatives.count: policy '{negatives.policy}' samples negatives; "
                "set a count, e.g. --set loss.negatives.count=16"]
    return []
