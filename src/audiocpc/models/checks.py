"""Configuration checks that need the model's components, run before any data is read.

`check_model_config(config)` checks each component's arguments against its constructor
(filling in the defaults, so the saved configuration is complete), the negative policy,
and the geometry: the encoder is built once (on the CPU, without touching the global RNG)
so that a window too short for its log-mel patch, or a frame-mode crop with no room for K
predictions, fails with messages that name the fields.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Optional

import torch

from audiocpc.config import ComponentConfig, Config, window_samples
from audiocpc.errors import ConfigError
from audiocpc.models.factory import build_augment, build_encoder
from audiocpc.models.negatives import needs_labels, policies
from audiocpc.models.registry import KINDS, resolve_component_params


def check_model_config(config: Config) -> Config:
    """`config` with every component's arguments resolved, or ConfigError listing every
    problem (one line each, naming the field)."""
    problems: list[str] = []
    resolved = config.model_copy(deep=True)
    for kind in KINDS:
        spec: ComponentConfig = getattr(config.model, kind)
        params = _resolve(kind, spec.type, spec.params, problems)
        if params is not None:
            setattr(resolved.model, kind, ComponentConfig(type=spec.type, **params))
    if not problems:
        problems.extend(negative_policy_problems(resolved))
    if not problems:
        problems.extend(model_geometry_problems(resolved))
    if problems:
        raise ConfigError(problems)
    return resolved


def component_problems(raw: dict[str, Any]) -> list[str]:
    """The components' problems straight from raw settings that failed the schema check, so
    that one error can list every problem at once."""
    given = raw.get("model")
    model: dict[str, Any] = given if isinstance(given, dict) else {}
    problems: list[str] = []
    for kind in KINDS:
        spec = model.get(kind)
        if isinstance(spec, dict) and isinstance(spec.get("type"), str):
            params = {k: v for k, v in spec.items() if k != "type"}
            _resolve(kind, spec["type"], params, problems)
    return problems


def _resolve(kind: str, type_name: str, params: dict[str, Any],
             problems: list[str]) -> Optional[dict[str, Any]]:
    try:
        return resolve_component_params(kind, type_name, params)
    except ConfigError as exc:
        problems.extend(f"model.{kind}.{p}" for p in exc.problems)
        return None


def negative_policy_problems(config: Config) -> list[str]:
    negatives = config.loss.negatives
    if negatives.policy not in policies():
        close = difflib.get_close_matches(negatives.policy, policies(), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return [f"loss.negatives.policy: unknown policy '{negatives.policy}'.{hint} "
                f"Choose one of: {', '.join(policies())}"]
    if negatives.count is None and negatives.policy != "other_sequences":
        return [f"loss.negatives.count: policy '{negatives.policy}' samples negatives; "
                "set a count, e.g. --set loss.negatives.count=16"]
    if needs_labels(negatives.policy) and config.data.labels == "none":
        return [f"loss.negatives.policy: '{negatives.policy}' needs a label per sequence: set "
                "data.labels to auto, folder, regex (with data.label_pattern) or csv (with "
                "data.labels_csv), e.g. --set data.labels=regex "
                "--set 'data.label_pattern=_(?P<label>[a-z]+)_'"]
    return []


def augment_problems(config: Config) -> list[str]:
    settings = config.augment
    if settings.apply_to != "none" and not build_augment(config).active:
        return [f"augment.apply_to: is '{settings.apply_to}' but no transform is on; set "
                "augment.gain_db, augment.noise_snr_db or augment.time_masks"]
    return []


def model_geometry_problems(config: Config) -> list[str]:
    problems = augment_problems(config)
    try:
        with torch.random.fork_rng(devices=[]):
            encoder = build_encoder(config)
    except ConfigError as exc:  # registry.build's name their setting; resolve's name a field
        return problems + [p if p.startswith(("model.", "data.")) else f"model.encoder.{p}"
                           for p in exc.problems]
    except TypeError as exc:
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
    ways = [f"data.full_duration={duration_text(needed * steps, data.sample_rate)} (or longer, "
            f"keeping full_duration*sample_rate/(T+k) whole)"]
    most_steps = data.crop_samples // needed
    if most_steps > data.k:
        ways.append(f"data.T={most_steps - data.k} (T+k = {most_steps} windows of "
                    f"{data.crop_samples // most_steps} samples)")
    rate = math.ceil(needed * steps / data.full_duration)
    ways.append(f"data.sample_rate >= {rate}")
    return (f"model.encoder: a window of {window} samples (data.full_duration x data.sample_rate / "
            f"(T+k) = {data.crop_samples}/{steps}) is too short for the encoder, which needs at "
            f"least {needed} samples per window to give one frame; set {' or '.join(ways)}, or "
            "shrink the encoder's kernels and strides")
