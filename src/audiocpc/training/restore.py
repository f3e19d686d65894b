"""Rebuild a trained CPC model from its run folder (the checkpoint alone is enough).

The checkpoint holds the resolved configuration as plain data and is read with the safe
weights-only loader. `random_init=True` gives the untrained baseline: the same
architecture and configuration with the seeded initialisation training started from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from audiocpc.training.checkpoint import CHECKPOINT_NAME, load_checkpoint
from audiocpc.config import Config, config_from_dict
from audiocpc.errors import CheckpointError, ConfigError
from audiocpc.models import CPCModel
from audiocpc.training.resume_rules import stored_config_error


@dataclass
class RestoredRun:
    model: CPCModel  # in eval mode, on `device`
    config: Config
    run_dir: Path
    name: str  # the run folder's name, with `_random` for the untrained baseline
    device: torch.device


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """`auto` = the first CUDA device if there is one, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    chosen = torch.device(device)
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device}: CUDA is not available (use auto or cpu)")
    return chosen


def restore_run(run_dir: str | Path, device: str | torch.device = "auto",
                random_init: bool = False) -> RestoredRun:
    """The model of `run_dir` (e.g. results/cpc/<name>) in eval mode on `device`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() and run_dir.name == CHECKPOINT_NAME:
        run_dir = run_dir.parent
    if not (run_dir / CHECKPOINT_NAME).is_file():
        raise CheckpointError(
            f"no trained model in {run_dir}: {CHECKPOINT_NAME} not found (give a run folder "
            "such as results/cpc/<name>, written by `audiocpc train`)")
    payload = load_checkpoint(run_dir / CHECKPOINT_NAME)
    try:
        config = config_from_dict(payload["config"])
    except ConfigError as exc:
        raise stored_config_error(run_dir / CHECKPOINT_NAME, exc) from None
    # Seeded like the trainer, so the random baseline is the initialisation training began with.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        model = CPCModel(config)
    if not random_init:
        try:
            model.load_state_dict(payload["model"])
        except (RuntimeError, KeyError) as exc:
            raise CheckpointError(f"{run_dir / CHECKPOINT_NAME}: the weights do not fit the model "
                                  f"its configuration describes ({exc})") from None
    target = pick_device(device)
    model.to(target).eval()
    # abspath, not resolve: "." names its folder, and a linked run folder keeps the link's name
    name = Path(os.path.abspath(run_dir)).name + ("_random" if random_init else "")
    return RestoredRun(model, config, run_dir, name, target)
