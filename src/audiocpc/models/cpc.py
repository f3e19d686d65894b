"""The CPC model: encoder -> context -> predictor, scored with InfoNCE.

Read top to bottom: `encode` turns waveforms into z, `contextualize` turns z into c,
`forward` predicts the future z from c and returns the loss with per-step accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, cast

import torch
from torch import nn

from audiocpc.models.augment import WaveAugment
from audiocpc.models.hidden import HiddenStates
from audiocpc.models.loss import candidate_logits, info_nce
from audiocpc.models.negatives import NegativeSampling, target_indices

# (z [B, L, D], labels [B] or None) -> (bank [B', L, D], bank labels, index of this batch's
# first sequence in the bank); e.g. the z of every process's batch in a distributed run.
NegativeBank = Callable[[torch.Tensor, Optional[torch.Tensor]],
                        tuple[torch.Tensor, Optional[torch.Tensor], int]]


@dataclass
class CPCOutput:
    loss: torch.Tensor
    step_loss: torch.Tensor  # [K]
    step_accuracy: torch.Tensor  # [K]
    logits: torch.Tensor  # [B, P, K, 1 + M], positive at index 0
    z: torch.Tensor  # [B, L, z_dim]
    c: torch.Tensor  # [B, L', c_dim]


class CPCModel(nn.Module):
    """CPC from its parts. `window` is the samples per window in window mode (one z per
    window, predictions from the last context step, as the reference) or None in frame mode
    (the encoder's frames are the steps, predictions from every step, as the CPC paper).

    Build one from a configuration with `audiocpc.models.build_cpc(config)`, or by hand:
    `CPCModel(Conv1dEncoder(z_dim=64), GRUContext(64, 128), LinearPredictor(128, 64, 5),
    DotSimilarity(64), steps=5, sample_rate=16000, negatives=NegativeSampling("batch", 16))`.
    """

    def __init__(self, encoder: nn.Module, context: nn.Module, predictor: nn.Module,
                 similarity: nn.Module, *, steps: int, sample_rate: int,
                 window: Optional[int] = None,
                 negatives: NegativeSampling = NegativeSampling(),
                 step_weights: Optional[Sequence[float]] = None,
                 augment: Optional[WaveAugment] = None,
                 negative_bank: Optional[NegativeBank] = None):
        super().__init__()
        self.mode = "window" if window is not None else "frame"
        self.steps = steps
        self.sample_rate = sample_rate
        self.window = window
        self.encoder = encoder
        self.context = context
        self.predictor = predictor
        self.similarity = similarity
        self.negatives = negatives
        self.augment = augment if augment is not None else WaveAugment()
        weights = torch.ones(steps) if step_weights is None else torch.tensor(list(step_weights))
        if weights.shape != (steps,):
            raise ValueError(f"step_weights: {weights.numel()} weights for {steps} steps")
        self.step_weights: torch.Tensor  # a buffer, declared for the type checker
        self.register_buffer("step_weights", weights / weights.sum(), persistent=False)
        self.negative_bank = negative_bank  # None: negatives come from this batch's z

    def encode(self, waves: torch.Tensor) -> torch.Tensor:
        """waves [B, S] -> z [B, L, z_dim]. Window mode: one z per window (frames averaged)."""
        if self.window is None:
            return self.encoder(waves)
        batch, samples = waves.shape
        windows = samples // self.window
        if windows == 0:
            raise ValueError(f"input of {samples} samples is shorter than one window ({self.window})")
        frames = self.encoder(waves[:, : windows * self.window].reshape(batch * windows, self.window))
        return frames.mean(dim=1).view(batch, windows, -1)

    def contextualize(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, L, z_dim] -> c [B, L, c_dim]; c_t depends on z_1..z_t only."""
        return self.context(z)

    def _encode_views(self, waves: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z the context reads, z the targets and negatives come from); they differ only
        when training with augmentation of the past or the future alone."""
        if not (self.training and self.augment.active):
            z = self.encode(waves)
            return z, z
        augmented = self.augment(waves)
        if self.window is not None and self.augment.apply_to != "both":
            # windows are encoded one by one: splice the augmented past (the first L-K
            # windows) or future (the last K) into the crop and encode once
            past_end = (waves.shape[1] // self.window - self.steps) * self.window
            in_past = torch.arange(waves.shape[1], device=waves.device) < past_end
            region = in_past if self.augment.apply_to == "past" else ~in_past
            z = self.encode(torch.where(region, augmented, waves))
            return z, z
        if self.augment.apply_to == "both":
            z = self.encode(augmented)
            return z, z
        z_augmented, z_clean = self.encode(augmented), self.encode(waves)
        if self.augment.apply_to == "past":
            return z_augmented, z_clean
        return z_clean, z_augmented

    def forward(self, waves: torch.Tensor, labels: Optional[torch.Tensor] = None, *,
                local_negatives: bool = False) -> CPCOutput:
        """waves [B, S] (labels [B] for label-aware negative policies) -> loss, per-step
        accuracy and logits [B, P, K, 1 + M] with the positive at index 0; P = 1 in window
        mode (predictions from c_T), L - K in frame mode (from every step).
        `local_negatives` draws negatives from this batch even when a negative bank is set
        (validation on one process)."""
        z_past, z = self._encode_views(waves)
        batch, length, _ = z.shape
        context_length = length - self.steps
        if context_length < 1:
            raise ValueError(f"{length} encoded steps leave no context before {self.steps} predictions")
        c = self.contextualize(z_past[:, :context_length])
        predictions = self.predictor(c)  # [B, L - K, K, z_dim]; causal, like c
        if self.window is not None:  # the reference: predict from the last context step only
            positions = torch.tensor([context_length - 1], device=z.device)
            predictions = predictions[:, -1:]
        else:  # the CPC paper: predict from every step that has K future steps
            positions = torch.arange(context_length, device=z.device)
        bank, bank_labels, first = z, labels, 0
        if self.negative_bank is not None and not local_negatives:
            bank, bank_labels, first = self.negative_bank(z, labels)
        targets = target_indices(batch, length, positions, self.steps) + first * length
        negatives = self.negatives(targets, bank.shape[0], length, bank_labels)
        logits = candidate_logits(predictions, bank, targets, negatives, self.similarity)
        result = info_nce(logits, self.step_weights)
        return CPCOutput(result.loss, result.step_loss, result.step_accuracy, result.logits, z, c)

    @torch.no_grad()
    def extract_features(self, waves: torch.Tensor, lengths: Optional[torch.Tensor] = None
                         ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """waves [B, S] -> (z [B, L, z_dim], c [B, L, c_dim], frame lengths [B] or None),
        in the spirit of torchaudio's `extract_features(waves, lengths)`."""
        z = self.encode(waves)
        c = self.contextualize(z)
        frame_lengths = None
        if lengths is not None:
            frame_lengths = self.frames_for(lengths)
        return z, c, frame_lengths

    def frames_for(self, lengths: torch.Tensor) -> torch.Tensor:
        """Number of z steps that `lengths` samples yield."""
        if self.window is not None:
            return torch.div(lengths, self.window, rounding_mode="floor")
        # a frame encoder's method (nn.Module types any attribute as Tensor | Module)
        output_length = cast(Callable[[int], int], self.encoder.output_length)
        return torch.tensor([output_length(int(n)) for n in lengths.tolist()],
                            device=lengths.device)

    @torch.no_grad()
    def hidden_states(self, waves: torch.Tensor, lengths: Optional[torch.Tensor] = None
                      ) -> HiddenStates:
        """Every layer's output, named, with its frame rate (s3prl-style; see models/hidden.py):
        `model.hidden_states(waves)["encoder.conv2"]`, `.names`, `.frame_rate(name)`, `.as_dict()`."""
        from audiocpc.models.hidden import hidden_states

        return hidden_states(self, waves, lengths)
