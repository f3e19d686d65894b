"""Which device a model runs on: one rule for training, restoring, embedding, HEAR and the
Python API (`auto` = a GPU when there is one, else the CPU)."""

from __future__ import annotations

from typing import Optional

import torch

from audiocpc.errors import ConfigError

# How to ask for another device, by the setting that asked: the message names both.
_FIXES = {"train.device": "--set train.device=auto or --set train.device=cpu",
          "--device": "--device auto or --device cpu (device='auto' or 'cpu' in Python)"}


def local_cuda_index(local_rank: int) -> int:
    """The GPU of a process: one per process; more processes than GPUs share them (gloo)."""
    return local_rank % max(torch.cuda.device_count(), 1)


def resolve_device(requested: str | torch.device = "auto", *, local_rank: Optional[int] = None,
                   setting: str = "--device") -> torch.device:
    """The device for `requested` (auto, cpu, cuda, cuda:1, ...). Under torchrun
    (`local_rank` given) `auto` and a bare `cuda` mean this process's own GPU. A device this
    machine lacks is a ConfigError naming `setting` (train.device or --device) and the fix."""
    fix = _FIXES.get(setting, "auto or cpu")
    name = str(requested)
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda") if local_rank is None else torch.device("cuda", local_cuda_index(local_rank))
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{setting}: '{name}' is not a device (auto, cpu, cuda, cuda:1); "
                          f"use {fix}") from None
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ConfigError(f"{setting}: {name} was asked for but no CUDA device is available "
                          f"here; use {fix}")
    if device.index is None:
        return device if local_rank is None else torch.device("cuda", local_cuda_index(local_rank))
    if device.index >= torch.cuda.device_count():
        raise ConfigError(f"{setting}: {name} was asked for but this machine has "
                          f"{torch.cuda.device_count()} CUDA device(s) (cuda:0 to "
                          f"cuda:{torch.cuda.device_count() - 1}); use {fix}")
    return device
