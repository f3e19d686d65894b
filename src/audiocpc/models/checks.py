"""Checks at configuration load that the model fits the crop: the encoder is built once
(on the CPU, without touching the global RNG) so that impossible geometries, such as a
window too short for its log-mel patch or a frame-mode crop with no room for K
predictions, fail before any data is read, with messages that name the fields."""

from __future__ import annotations

import math
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
            problems.append(window_too_short_problem(config, window, minimum_window(output_length)))
    return problems


def minimum_window(output_length: Any, limit: int = 1 << 22) -> int:
    """The fewest samples for which the encoder gives at least one frame (binary search
    over its `output_length`, which never decreases with the input length)."""
    low, high = 1, limit
    if output_length(high) < 1:
        return high
    while low < high:
        middle = (low + high) // 2
        if output_length(middle) >= 1:
            high = middle
        else:
            low = middle + 1
    return low


def window_too_short_problem(config: "Config", window: int, needed: int) -> str:
    """Name the encoder's minimum window and each single setting that reaches it."""
    from audiocpc.config import duration_text

    data = config.data
    steps = data.T + data.k
    ways = [f"data.full_duration={duration_text(needed * steps, data.desired_sr)} (or longer, "
            f"keeping full_duration*desired_sr/(T+k) whole)"]
    most_steps = data.crop_samples // needed
    if most_steps > data.k:
        ways.append(f"data.T={most_steps - data.k} (T+k = {most_steps} windows of "
                    f"{data.crop_samples // most_steps} samples)")
    rate = math.ceil(needed * steps / data.full_duration)
    ways.append(f"data.desired_sr >= {rate}")
    return (f"model.encoder: a window of {window} samples (data.full_duration x data.desired_sr / "
            f"(T+k) = {data.crop_samples}/{steps}) is too short for the encoder, which needs at "
            f"least {needed} samples per window to give one frame; set {' or '.join(ways)}, or "
            "shrink the encoder's kernels and strides")
