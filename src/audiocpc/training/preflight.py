"""Checks of a training setup that need more than the settings alone: the data folder and
the built model. They run before any work starts and report every problem at once, one line
each, naming the setting to change (the CLI prints them and exits with status 2). The crop
geometry is checked when the configuration loads; whether crops fit the files, by the scan.
"""

from __future__ import annotations

from pathlib import Path

import torch

from audiocpc.config import Config
from audiocpc.errors import ConfigError


def data_folder_problems(data_dir: str | Path) -> list[str]:
    folder = Path(data_dir)
    if folder.is_dir():
        return []
    if folder.exists():
        return [f"--data: {folder} is a file, not a folder of audio files"]
    return [f"--data: data folder not found: {folder} (give an existing folder of audio files)"]


def sequence_length(config: Config, model: torch.nn.Module) -> int:
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


def precision_problems(config: Config, device: torch.device) -> list[str]:
    """fp16 autocast on a CPU runs without fast kernels: measured 12x slower than float32
    (10 steps of 1dconv_tiny: 1.56 s vs 0.12 s; bf16 0.20 s), so it is refused there."""
    if config.train.mixed_precision == "fp16" and device.type == "cpu":
        return ["train.mixed_precision: fp16 on the CPU is about 12x slower than float32 (no fast "
                "float16 kernels); use --set train.mixed_precision=none (or bf16, on CPUs with "
                "AMX). fp16 is for CUDA GPUs (train.device=cuda)"]
    return []


def check_training_setup(config: Config, data_dir: str | Path, model: torch.nn.Module,
                         world_size: int = 1) -> None:
    """Raise ConfigError listing every problem of this data folder + model + settings."""
    problems = data_folder_problems(data_dir)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    problems += precision_problems(config, device)
    problems += negative_count_problems(config, sequence_length(config, model), world_size)
    if problems:
        raise ConfigError(problems)
