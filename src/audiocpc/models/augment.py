"""Waveform augmentation for CPC training (off by default), as CPC_v2 did on patches.

Random gain, additive white noise at a given SNR and time masking, applied to the past
(what the context network reads), the future (the targets and their negatives) or both.
Draws come from torch's global generator on the waves' device, whose state the checkpoint
saves, so a resumed run augments exactly as a run that never stopped.
"""

from __future__ import annotations

from typing import Optional

import torch


class WaveAugment:
    """waves [B, S] -> augmented waves [B, S], each sequence with its own random draws.

    `apply_to` is none / past / future / both; `gain_db` draws a gain in +-dB, `noise_snr_db`
    adds white noise at that SNR, `time_masks` zeroes that many spans of up to `mask_samples`.
    """

    def __init__(self, apply_to: str = "none", gain_db: float = 0.0,
                 noise_snr_db: Optional[float] = None, time_masks: int = 0, mask_samples: int = 0):
        self.apply_to = apply_to
        self.gain_db = gain_db
        self.noise_snr_db = noise_snr_db
        self.time_masks = time_masks
        self.mask_samples = mask_samples

    @property
    def active(self) -> bool:
        return self.apply_to != "none" and (
            self.gain_db > 0 or self.noise_snr_db is not None
            or (self.time_masks > 0 and self.mask_samples > 0))

    def __call__(self, waves: torch.Tensor) -> torch.Tensor:
        s = self
        batch, samples = waves.shape
        device = waves.device
        out = waves
        if s.gain_db > 0:
            gain_db = (torch.rand(batch, 1, device=device) * 2 - 1) * s.gain_db
            out = out * torch.pow(10.0, gain_db / 20)
        if s.noise_snr_db is not None:
            power = out.float().pow(2).mean(dim=1, keepdim=True)
            noise_std = torch.sqrt(power / 10 ** (s.noise_snr_db / 10))
            out = out + torch.randn(batch, samples, device=device) * noise_std.to(out.dtype)
        if s.time_masks > 0 and self.mask_samples > 0:
            lengths = torch.randint(0, self.mask_samples + 1, (batch, s.time_masks, 1), device=device)
            starts = torch.randint(0, max(samples - self.mask_samples, 0) + 1,
                                   (batch, s.time_masks, 1), device=device)
            position = torch.arange(samples, device=device).view(1, 1, samples)
            masked = ((position >= starts) & (position < starts + lengths)).any(dim=1)
            out = out.masked_fill(masked, 0.0)
        return out
