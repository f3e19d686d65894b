"""The CPC model: encoder -> context -> predictor, scored with InfoNCE.

Read top to bottom: `encode` turns waveforms into z, `contextualize` turns z into c,
`forward` predicts the future z from c and returns the loss with per-step accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from audiocpc.models.augment import WaveAugment
from audiocpc.config import Config, steps_weights, window_samples
from audiocpc.models.loss import candidate_logits, info_nce
from audiocpc.models.checks import build_encoder
from audiocpc.models.negatives import sample_negatives, target_indices
from audiocpc.models.registry import build


@dataclass
class CPCOutput:
    loss: torch.Tensor
    step_loss: torch.Tensor  # [K]
    step_accuracy: torch.Tensor  # [K]
    logits: torch.Tensor  # [B, P, K, 1 + M], positive at index 0
    z: torch.Tensor  # [B, L, z_dim]
    c: torch.Tensor  # [B, L', c_dim]


class CPCModel(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        data, spec = config.data, config.model
        self.mode = spec.mode
        self.steps = data.k
        self.sample_rate = data.desired_sr
        self.window = window_samples(config) if spec.mode == "window" else None
        self.encoder = build_encoder(config)
        self.context = build("context", spec.context.type, spec.context.params,
                             in_dim=spec.z_dim, out_dim=spec.c_dim, max_len=data.T + data.k)
        self.predictor = build("predictor", spec.predictor.type, spec.predictor.params,
                               c_dim=spec.c_dim, z_dim=spec.z_dim, steps=data.k)
        self.similarity = build("similarity", spec.similarity.type, spec.similarity.params,
                                dim=spec.z_dim)
        self.negative_policy = config.loss.negatives.policy
        self.negative_count = config.loss.negatives.count
        self.allow_positive = config.loss.negatives.allow_positive
        self.augment = WaveAugment(config.augment, data.desired_sr)
        self.register_buffer("step_weights", torch.tensor(steps_weights(config)), persistent=False)
        # Optional hook (z, labels) -> (bank, bank labels, index of this batch's first row in
        # the bank), set by the trainer for loss.negatives.across_ranks; None: the bank is z.
        self.negative_bank: Optional[Callable[..., tuple]] = None

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

    def forward(self, waves: torch.Tensor, labels: Optional[torch.Tensor] = None) -> CPCOutput:
        """waves [B, S] (labels [B] for label-aware negative policies) -> loss, per-step
        accuracy and logits [B, P, K, 1 + M] with the positive at index 0; P = 1 in window
        mode (predictions from c_T), L - K in frame mode (from every step)."""
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
        if self.negative_bank is not None:
            bank, bank_labels, first = self.negative_bank(z, labels)
        targets = target_indices(batch, length, positions, self.steps) + first * length
        negatives = sample_negatives(self.negative_policy, targets, bank.shape[0], length,
                                     self.negative_count, bank_labels, self.allow_positive)
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
        return torch.tensor([self.encoder.output_length(int(n)) for n in lengths.tolist()],
                            device=lengths.device)

    @torch.no_grad()
    def hidden_states(self, waves: torch.Tensor, lengths: Optional[torch.Tensor] = None
                      ) -> "HiddenStates":  # noqa: F821 (models.hidden)
        """Every layer's output, named, with its frame rate (s3prl-style; see models/hidden.py):
        `model.hidden_states(waves)["encoder.conv2"]`, `.names`, `.frame_rate(name)`, `.as_dict()`."""
        from audiocpc.models.hidden import hidden_states

        return hidden_states(self, waves, lengths)
