"""Negative sampling: which encoded frames compete with the positive in InfoNCE.

Everything works on flat indices into the bank `z.reshape(B * L, D)`: the positive for the
prediction made at time t for step j of sequence b is `b * L + t + j`. Sampling is
vectorised (no Python loop per element) and uses torch's global generator, whose state the
checkpoint saves, so a resumed run draws the same negatives.

A sampled policy is a rule "which sequences of the batch may give negatives to a positive of
sequence b" ([B, B] mask); negatives are then drawn uniformly from every frame of those
sequences, never the positive itself unless `allow_positive` is set.

| policy | pool for a positive of sequence b |
|---|---|
| `other_sequences` | every frame of the other sequences (count = null: the reference's N-1, at the target's step) |
| `same_sequence` | the other frames of sequence b |
| `batch` | every frame of the batch but the positive |
| `same_label` | every frame of the sequences whose label equals b's (b included), but the positive |
| `other_label` | every frame of the sequences whose label differs from b's (a sequence whose batch holds only its own label draws from every other sequence, as `other_sequences`: a batch of one class must not stop a run) |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from audiocpc.errors import ConfigError

# policy name -> rule giving, for labels [B] (or None) and the batch size, the [B, B] mask
# of sequences allowed to give negatives to each sequence's positives.
PoolRule = Callable[[int, Optional[torch.Tensor], torch.device], torch.Tensor]
_POLICIES: dict[str, PoolRule] = {}
_NEEDS_LABELS: set[str] = set()


def _policy(name: str, needs_labels: bool = False) -> Callable[[PoolRule], PoolRule]:
    def decorator(fn: PoolRule) -> PoolRule:
        _POLICIES[name] = fn
        if needs_labels:
            _NEEDS_LABELS.add(name)
        return fn

    return decorator


def policies() -> list[str]:
    return sorted(_POLICIES)


def needs_labels(policy: str) -> bool:
    return policy in _NEEDS_LABELS


def target_indices(batch: int, length: int, positions: torch.Tensor, steps: int) -> torch.Tensor:
    """Flat bank index of every positive: [B, P, K]."""
    device = positions.device
    b = torch.arange(batch, device=device).view(batch, 1, 1)
    j = torch.arange(1, steps + 1, device=device).view(1, 1, steps)
    return b * length + positions.view(1, -1, 1) + j


@_policy("other_sequences")
def _other_sequences(batch: int, labels: Optional[torch.Tensor], device: torch.device) -> torch.Tensor:
    return ~torch.eye(batch, dtype=torch.bool, device=device)


@_policy("same_sequence")
def _same_sequence(batch: int, labels: Optional[torch.Tensor], device: torch.device) -> torch.Tensor:
    return torch.eye(batch, dtype=torch.bool, device=device)


@_policy("batch")
def _any_in_batch(batch: int, labels: Optional[torch.Tensor], device: torch.device) -> torch.Tensor:
    return torch.ones(batch, batch, dtype=torch.bool, device=device)


@_policy("same_label", needs_labels=True)
def _same_label(batch: int, labels: Optional[torch.Tensor], device: torch.device) -> torch.Tensor:
    assert labels is not None  # needs_labels: the caller refuses a batch without them
    return labels.view(-1, 1) == labels.view(1, -1)


@_policy("other_label", needs_labels=True)
def _other_label(batch: int, labels: Optional[torch.Tensor], device: torch.device) -> torch.Tensor:
    assert labels is not None  # needs_labels: the caller refuses a batch without them
    allowed = labels.view(-1, 1) != labels.view(1, -1)
    alone = ~allowed.any(dim=1)  # no other label in this batch: fall back to the other sequences
    return torch.where(alone.view(-1, 1), ~torch.eye(batch, dtype=torch.bool, device=device), allowed)


def _exhaustive_other_sequences(targets: torch.Tensor, batch: int, length: int) -> torch.Tensor:
    """The reference's negatives: every other sequence's frame at the target's step."""
    b = targets // length
    t = targets % length
    offsets = torch.arange(1, batch, device=targets.device)
    return ((b.unsqueeze(-1) + offsets) % batch) * length + t.unsqueeze(-1)


def sample_from_pool(targets: torch.Tensor, allowed: torch.Tensor, length: int, count: int,
                     allow_positive: bool = False) -> torch.Tensor:
    """Draw `count` negatives per positive, uniformly from the frames of the sequences that
    `allowed[b]` ([B, B] bool) marks for positives of sequence b. Returns [*targets.shape, count].

    The pool of row b is laid out as (allowed sequences in index order) x (frames); a draw
    is a rank in that pool, shifted past the positive's own rank when the positive is in
    the pool and may not be drawn.
    """
    device = targets.device
    b = targets // length
    t = targets % length
    sequences_allowed = allowed.sum(dim=1)  # [B]
    if bool((sequences_allowed == 0).any()):
        empty = torch.nonzero(sequences_allowed == 0).flatten().tolist()
        raise ValueError(f"no sequence of the batch may give negatives to sequence(s) {empty} "
                         "under this policy (e.g. every label in the batch is the same)")
    own_in_pool = allowed.diagonal()[b]  # [*targets]
    exclude = own_in_pool & (not allow_positive)
    pool_size = sequences_allowed[b] * length - exclude.long()
    if bool((pool_size <= 0).any()):
        raise ValueError("a positive's only candidate is itself: sequences need at least 2 frames")
    shape = (*targets.shape, count)
    rank = (torch.rand(shape, device=device, dtype=torch.float64)
            * pool_size.unsqueeze(-1)).long()
    rank = torch.minimum(rank, pool_size.unsqueeze(-1) - 1)
    # the positive's rank in its own row's pool: (rank of b among allowed sequences) * L + t
    own_rank = (allowed.long().cumsum(dim=1).diagonal() - 1)[b] * length + t
    rank = rank + (exclude.unsqueeze(-1) & (rank >= own_rank.unsqueeze(-1))).long()
    # allowed sequences first, in index order (a stable sort of the negated mask)
    order = torch.sort((~allowed).to(torch.uint8), dim=1, stable=True).indices  # [B, B]
    rows = b.unsqueeze(-1).expand(shape)
    sequence = order[rows, torch.div(rank, length, rounding_mode="floor")]
    return sequence * length + rank % length


def sample_negatives(policy: str, targets: torch.Tensor, batch: int, length: int,
                     count: Optional[int], labels: Optional[torch.Tensor] = None,
                     allow_positive: bool = False) -> torch.Tensor:
    """Flat bank indices of the negatives for each positive: [B, P, K, M]."""
    if policy not in _POLICIES:
        raise ValueError(f"unknown negative policy '{policy}'; choose one of {', '.join(policies())}")
    if needs_labels(policy):
        if labels is None:
            raise ConfigError(f"loss.negatives.policy: '{policy}' needs one label per sequence, "
                              "passed as model(waves, labels); in training, set data.labels")
        if labels.shape != (batch,):
            raise ValueError(f"labels must have shape [{batch}] (one per sequence), got "
                             f"{list(labels.shape)}")
    if count is None:
        if policy != "other_sequences":
            raise ValueError(f"policy '{policy}' samples negatives: give a count")
        return _exhaustive_other_sequences(targets, batch, length)
    allowed = _POLICIES[policy](batch, labels.to(targets.device) if labels is not None else None,
                                targets.device)
    return sample_from_pool(targets, allowed, length, count, allow_positive)


@dataclass(frozen=True)
class NegativeSampling:
    """How a CPCModel draws its negatives: a policy from the table above, `count` per
    prediction (None: the reference's N-1 other sequences at the target's step), and
    whether the positive itself may be drawn."""

    policy: str = "other_sequences"
    count: Optional[int] = None
    allow_positive: bool = False

    def __post_init__(self) -> None:
        if self.policy not in _POLICIES:
            raise ValueError(f"unknown negative policy '{self.policy}'; choose one of "
                             f"{', '.join(policies())}")

    def __call__(self, targets: torch.Tensor, batch: int, length: int,
                 labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        return sample_negatives(self.policy, targets, batch, length, self.count, labels,
                                self.allow_positive)
