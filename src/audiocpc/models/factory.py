"""Models from a configuration: the one model file that reads `Config`.

`build_cpc(config)` builds each component from the registry with its configured
arguments and the wiring the model gives it (dimensions, sample rate, steps), then
assembles a `CPCModel` from the parts.
"""

from __future__ import annotations

from typing import Optional

from torch import nn

from audiocpc.config import Config, step_weights, window_samples
from audiocpc.models.augment import WaveAugment
from audiocpc.models.cpc import CPCModel, NegativeBank
from audiocpc.models.negatives import NegativeSampling
from audiocpc.models.registry import build


def build_encoder(config: Config) -> nn.Module:
    """The configured encoder with its wiring (z_dim, sample_rate, window_samples)."""
    spec = config.model.encoder
    window = window_samples(config) if config.model.mode == "window" else None
    return build("encoder", spec.type, spec.params, z_dim=config.model.z_dim,
                 sample_rate=config.data.sample_rate, window_samples=window)


def build_augment(config: Config) -> WaveAugment:
    a = config.augment
    return WaveAugment(apply_to=a.apply_to, gain_db=a.gain_db, noise_snr_db=a.noise_snr_db,
                       time_masks=a.time_masks,
                       mask_samples=int(round(a.time_mask_seconds * config.data.sample_rate)))


def build_cpc(config: Config, negative_bank: Optional[NegativeBank] = None) -> CPCModel:
    """The CPC model that `config` describes (weights drawn from torch's global generator)."""
    data, spec = config.data, config.model
    negatives = config.loss.negatives
    return CPCModel(
        build_encoder(config),
        build("context", spec.context.type, spec.context.params,
              in_dim=spec.z_dim, out_dim=spec.c_dim, max_len=data.T + data.k),
        build("predictor", spec.predictor.type, spec.predictor.params,
              c_dim=spec.c_dim, z_dim=spec.z_dim, steps=data.k),
        build("similarity", spec.similarity.type, spec.similarity.params, dim=spec.z_dim),
        steps=data.k,
        sample_rate=data.sample_rate,
        window=window_samples(config) if spec.mode == "window" else None,
        negatives=NegativeSampling(negatives.policy, negatives.count, negatives.allow_positive),
        step_weights=step_weights(config),
        augment=build_augment(config),
        negative_bank=negative_bank,
    )
