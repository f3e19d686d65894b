"""Checks of a training setup that need more than the settings alone: the data folder and
the built model. They run before any work starts and report every problem at once, one line
each, naming the setting to change (the CLI prints them and exits with status 2). The crop
geometry is checked when the configuration loads; whether crops fit the files, by the scan.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import torch

from audiocpc.config import Config
from audiocpc.data.labels import join_group_rule, training_label_rule
from audiocpc.errors import ConfigError
from audiocpc.models.cpc import CPCModel


def data_folder_problems(data_dir: str | Path) -> list[str]:
    from audiocpc.data.prepared_shards import url_problems
    from audiocpc.data.remote import data_location

    location = data_location(data_dir)
    if isinstance(location, str):  # a URL (not file://): it must hold a prepared corpus
        return url_problems(location)
    folder = location
    if folder.is_dir():
        return []
    if folder.exists():
        return [f"--data: {folder} is a file, not a folder of audio files"]
    return [f"--data: data folder not found: {folder} (give an existing folder of audio files)"]


SHORT_CLIP_PRESET = "fsdd"  # frame mode, 0.25 s crops at 8 kHz: made for short clips


def _encoder_minimum(config: Config) -> tuple[int, Any]:
    """(fewest samples the encoder turns into one frame, its output_length) for this config."""
    from audiocpc.models.checks import minimum_window
    from audiocpc.models.factory import build_encoder

    with torch.random.fork_rng(devices=[]):
        encoder = build_encoder(config)
    output_length = getattr(encoder, "output_length", None)
    if not callable(output_length):
        return 1, None
    return minimum_window(output_length), output_length


def working_crop(config: Config, lengths: list[int], keep: float = 0.9) -> Optional[list[str]]:
    """`--set` overrides giving the longest training crop that at least `keep` of the files
    (lengths in samples at data.sample_rate) can supply and that this model accepts: in
    window mode a whole number of samples for each of T+k windows, each at least as long as
    the encoder needs (lowering data.T when the windows would be too short); None if none."""
    from audiocpc.config import duration_text

    if not lengths:
        return None
    data = config.data
    ordered = sorted(lengths, reverse=True)
    reach = ordered[max(1, math.ceil(keep * len(ordered))) - 1]  # kept by >= keep of the files
    needed, output_length = _encoder_minimum(config)
    if config.model.mode == "frame":
        if output_length is not None and output_length(reach) <= data.k:
            return None
        return [f"data.full_duration={duration_text(reach, data.sample_rate)}"]
    steps = data.T + data.k
    if reach // steps >= needed:
        return [f"data.full_duration={duration_text(reach // steps * steps, data.sample_rate)}"]
    most = reach // needed  # the most windows of the encoder's minimum length that fit
    if most - data.k < 2:
        return None
    return [f"data.T={most - data.k}",
            f"data.full_duration={duration_text(reach // most * most, data.sample_rate)}"]


def crop_advice(config: Config, lengths: list[int], keep: float = 0.9) -> str:
    """The fix for crops longer than the files: a value that works, as `--set` to paste, and
    the preset made for short clips."""
    data = config.data
    geometry = (f"at T+k = {data.T + data.k} windows and data.sample_rate = {data.sample_rate} Hz"
                if config.model.mode == "window" else f"at data.sample_rate = {data.sample_rate} Hz")
    overrides = working_crop(config, lengths, keep)
    preset = (f"For short clips use the preset made for them: --preset {SHORT_CLIP_PRESET} "
              "(frame mode, 0.25 s crops at 8 kHz).")
    if overrides is None:
        return (f"No crop {geometry} fits {keep:.0%} of these files with this encoder. {preset}")
    kept = sum(1 for n in lengths if n >= _crop_samples(config, overrides))
    paste = " ".join(f"--set {o}" for o in overrides)
    if any(o.startswith("data.T=") for o in overrides):
        needed, _ = _encoder_minimum(config)
        geometry = (f"at data.sample_rate = {data.sample_rate} Hz (T+k = {data.T + data.k} windows "
                    f"would be shorter than the encoder's minimum of {needed} samples, so data.T "
                    "is lowered too)")
    return (f"The longest crop {geometry} that keeps at least {keep:.0%} of the files "
            f"({kept} of {len(lengths)}): `{paste}`. {preset}")


def _crop_samples(config: Config, overrides: list[str]) -> int:
    values = dict(o.split("=", 1) for o in overrides)
    return int(round(float(values["data.full_duration"]) * config.data.sample_rate))


def sequence_length(config: Config, model: CPCModel) -> int:
    """Encoded steps per training crop: T+k windows, or the encoder's frames in frame mode.
    (Whether the model fits the crop at all is checked when the configuration is loaded.)"""
    if config.model.mode == "window":
        return config.data.T + config.data.k
    try:
        return int(model.frames_for(torch.tensor([config.data.crop_samples]))[0])
    except (AttributeError, NotImplementedError):  # an encoder that cannot tell: no check
        return 0


def negative_count_problems(config: Config, length: int, world_size: int = 1) -> list[str]:
    """A requested number of negatives larger than the distinct candidates a batch holds
    (the sampler would repeat candidates, which weakens the loss without saying so)."""
    negatives = config.loss.negatives
    count = negatives.count
    if count is None or length <= 0:
        return []
    sequences = config.data.N * (world_size if getattr(negatives, "across_ranks", False) else 1)
    pools = {"other_sequences": (sequences - 1) * length, "same_sequence": length - 1,
             "batch": sequences * length - 1}
    available = pools.get(negatives.policy)
    if available is not None and getattr(negatives, "allow_positive", False):
        available += 1  # the positive itself may be drawn too
    if available is None or count <= available:
        return []
    return [f"loss.negatives.count: {count} negatives per prediction, but a batch of data.N = "
            f"{sequences} sequences x {length} steps holds only {available} distinct candidates "
            f"for policy '{negatives.policy}'; raise data.N or lower loss.negatives.count "
            f"to at most {available}"]


def data_rule_problems(config: Config) -> list[str]:
    """The label (data.labels) and join-group (data.join_by) rules, checked before the data
    is scanned: a bad pattern or label table should not wait for a long decode."""
    problems = []
    for build in (training_label_rule, join_group_rule):
        try:
            build(config.data)
        except ConfigError as exc:
            problems += exc.problems
    return problems


def precision_problems(config: Config, device: torch.device) -> list[str]:
    """fp16 autocast on a CPU runs without fast kernels: measured 12x slower than float32
    (10 steps of 1dconv_tiny: 1.56 s vs 0.12 s; bf16 0.20 s), so it is refused there."""
    if config.train.mixed_precision == "fp16" and device.type == "cpu":
        return ["train.mixed_precision: fp16 on the CPU is about 12x slower than float32 (no fast "
                "float16 kernels); use --set train.mixed_precision=none (or bf16, on CPUs with "
                "AMX). fp16 is for CUDA GPUs (train.device=cuda)"]
    return []


def check_training_setup(config: Config, data_dir: str | Path, model: CPCModel,
                         world_size: int = 1) -> None:
    """Raise ConfigError listing every problem of this data folder + model + settings."""
    problems = data_folder_problems(data_dir)
    problems += data_rule_problems(config)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    problems += precision_problems(config, device)
    problems += negative_count_problems(config, sequence_length(config, model), world_size)
    if problems:
        raise ConfigError(problems)
