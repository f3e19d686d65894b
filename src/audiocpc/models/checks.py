"""Checks at configuration load that the model fits the crop: the encoder is built once
(on the CPU, without touching the global RNG) so that impossible geometries, such as a
window too short for its log-mel patch or a frame-mode crop with no room for K
predictions, fail before any data is read, with messages that name the fields."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from audiocpc.errors import ConfigError
from audiocpc.models.registry import build

if TYPE_CHECKING:
    from audiocpc.config import Config


def build_encoder(config: "Config") -> Any:
    """The configured encoder with its wiring (z_dim, sample_rate, window_samples)."""
    from audiocpc.config import window_samples

    spec = config.model.encoder
    window = window_samples(config) if config.model.mode == "window" else None
    return build("encoder", spec.type, spec.params, z_dim=config.model.z_dim,
                 sample_rate=config.data.desired_sr, window_samples=window)


def augment_problems(config: "Config") -> list[str]:
    from audiocpc.models.augment import WaveAugment

    settings = config.augment
    if settings.apply_to != "none" and not WaveAugment(settings, config.data.desired_sr).active:
        return [f"augment.apply_to: is '{settings.apply_to}' but no transform is on; set "
                "augment.gain_db, augment.noise_snr_db or augment.time_masks"]
    return []


def model_geometry_problems(config: "Config") -> list[str]:
    from audiocpc.config import window_samples

    problems = augment_problems(config)
    try:
        with torch.random.fork_rng(devices=[]):
            encoder = build_encoder(config)
    except ConfigError as exc:
        return problems + [f"model.encoder.{p}" for p in exc.problems]
    except (ValueError, TypeError) as exc:
        message = str(exc)
        return problems + [message if message.startswith(("model.", "data.")) else
                           f"model.encoder: {message}"]
    output_length = getattr(encoder, "output_length", None)
    data, steps = config.data, config.data.k
    if config.model.mode == "frame":
        if not callable(output_length):
            problems.append(
                f"model.mode: frame mode needs an encoder with output_length(samples); "
                f"model.encoder.type '{config.model.encoder.type}' has none (add the method, "
                "or use model.mode=window)")
            return problems
        length = output_length(data.crop_samples)
        if length <= steps:
            problems.append(
                f"data.full_duration: a crop of {data.crop_samples} samples gives {length} "
                f"encoded steps, but frame mode predicts data.k = {steps} steps ahead and needs "
                f"more than {steps}; lengthen the crop or lower data.k")
    elif callable(output_length):
        window = window_samples(config)
        if output_length(window) < 1:
            problems.append(
                f"model.encoder: a window of {window} samples (data.full_duration x "
                f"data.desired_sr / (T+k)) is too short for the encoder to give one frame; "
                "lengthen the windows or shrink the encoder's kernels and strides")
    return problems
