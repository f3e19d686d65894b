"""Rebuild a trained CPC model from its run folder (the checkpoint alone is enough).

The checkpoint holds the resolved configuration as plain data and is read with the safe
weights-only loader. `random_init=True` gives the untrained baseline: the same
architecture and configuration with the seeded initialisation training started from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from audiocpc.training.checkpoint import CHECKPOINT_NAME, load_checkpoint
from audiocpc.config import Config
from audiocpc.errors import CheckpointError, ConfigError
from audiocpc.fileio import sha256_file, sha256_json
from audiocpc.models import CPCModel, build_cpc
from audiocpc.models.checks import check_model_config
from audiocpc.presets import config_from_dict
from audiocpc.training.device import resolve_device
from audiocpc.training.run_folder import RunFolder
from audiocpc.training.resume_rules import stored_config_error


@dataclass
class RestoredRun:
    model: CPCModel  # in eval mode, on `device`
    config: Config
    run_dir: Path
    name: str  # the run folder's name, with `_random` for the untrained baseline
    device: torch.device
    # What this model is, for the outputs made with it to record (see `model_identity`).
    identity: dict[str, Any] = field(default_factory=dict)


def _identity(payload: dict[str, Any], checkpoint_sha256: str, random_init: bool) -> dict[str, Any]:
    """The trained model: its checkpoint's step and content hash. The untrained baseline:
    its architecture and seed only (the settings it is built from; training does not
    change it)."""
    if not isinstance(payload.get("config"), dict):
        raise CheckpointError("the checkpoint's configuration is damaged (not a mapping); retrain "
                              "with --force")
    if random_init:
        config = dict(payload["config"])
        architecture = {k: v for k, v in config.items() if k not in ("train", "output", "preset")}
        seed = (config.get("train") or {}).get("seed")
        return {"random_init": True, "architecture_sha256": sha256_json(architecture), "seed": seed}
    return {"checkpoint": {"step": int(payload.get("step", 0)), "sha256": checkpoint_sha256}}


# (checkpoint hash, random_init) -> identity, so checking a stage does not reload the file
_IDENTITIES: dict[tuple[str, bool], dict[str, Any]] = {}


def _load_with_hash(path: Path) -> tuple[dict[str, Any], str]:
    """The checkpoint and the sha256 of exactly the bytes that were loaded (hashed before and
    after: a checkpoint replaced meanwhile by a running training is read again)."""
    for _ in range(3):
        before = sha256_file(path)
        payload = load_checkpoint(path)
        if sha256_file(path) == before:
            return payload, before
    raise CheckpointError(f"{path} keeps changing while it is read (is a training run writing it?); "
                          "try again when it has finished")


def model_identity(run_dir: str | Path, random_init: bool = False) -> dict[str, Any]:
    """What `restore_run(run_dir, random_init=...)` would load now, as plain data: the
    identity an embedding made with it records. Cheap to call again (cached by content)."""
    path = RunFolder(Path(run_dir)).checkpoint_path
    if not path.is_file():
        raise CheckpointError(f"no trained model in {run_dir}: {CHECKPOINT_NAME} not found")
    key = (sha256_file(path), random_init)
    if key not in _IDENTITIES:
        payload, sha = _load_with_hash(path)
        _IDENTITIES[(sha, random_init)] = _identity(payload, sha, random_init)
        key = (sha, random_init)
    return _IDENTITIES[key]


def restore_run(run_dir: str | os.PathLike[str], device: str | torch.device = "auto",
                random_init: bool = False) -> RestoredRun:
    """The model of `run_dir` (e.g. results/cpc/<name>, or a folder written by `audiocpc
    export`) in eval mode on `device`."""
    from audiocpc.training.exported import EXPORT_NAMES, is_exported_folder

    run_dir = Path(run_dir)
    if not run_dir.is_dir() and run_dir.name in (CHECKPOINT_NAME, *EXPORT_NAMES):
        run_dir = run_dir.parent
    checkpoint = RunFolder(run_dir).checkpoint_path
    if not checkpoint.is_file() and is_exported_folder(run_dir):
        checkpoint = run_dir / "model.safetensors"  # load_checkpoint reads the exported folder
    if not checkpoint.is_file():
        raise CheckpointError(
            f"no trained model in {run_dir}: {CHECKPOINT_NAME} not found (give a run folder "
            "such as results/cpc/<name>, written by `audiocpc train`, or a folder written by "
            "`audiocpc export`)")
    payload, sha = _load_with_hash(checkpoint)
    identity = _IDENTITIES.setdefault((sha, random_init), _identity(payload, sha, random_init))
    try:
        config = check_model_config(config_from_dict(payload["config"]))
    except ConfigError as exc:
        raise stored_config_error(checkpoint, exc) from None
    # Seeded like the trainer, so the random baseline is the initialisation training began with.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        model = build_cpc(config)
    if not random_init:
        try:
            model.load_state_dict(payload["model"])
        except (RuntimeError, KeyError) as exc:
            raise CheckpointError(f"{checkpoint}: the weights do not fit the model "
                                  f"its configuration describes ({exc})") from None
    target = resolve_device(device)
    model.to(target).eval()
    name = RunFolder(run_dir).name + ("_random" if random_init else "")
    return RestoredRun(model, config, run_dir, name, target, identity)
