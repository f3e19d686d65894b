"""The rule for `train --resume` with settings other than the checkpoint's.

A resumed run continues exactly as if it had never stopped, so a setting that changes its
course (the seed, the data and its standardisation or joining, the model, the loss, the
optimizer, the batch and its accumulation, the learning-rate schedule, the validation
split) is refused, naming each changed key with its old value. Settings that only say how long,
where or how fast to run, and the learning rate, may change: they are applied, announced
in one line and recorded (config.yaml, the checkpoint's config and its `settings_changes`).
A folder that holds a run is only continued with --resume or replaced with --force.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from audiocpc.presets import config_from_dict
from audiocpc.errors import CheckpointError, ConfigError, RunExistsError
from audiocpc.training.checkpoint import load_checkpoint
from audiocpc.training.distributed import effective_lr
from audiocpc.training.run_folder import RunFolder

log = logging.getLogger("audiocpc")

# Keys (or sections, ending in '.') that may change on --resume. Everything else is refused.
SAFE_ON_RESUME: tuple[str, ...] = (
    "preset",  # only a name: a changed setting behind it is compared on its own
    "train.epochs", "train.steps_per_epoch", "train.checkpoint_every", "train.max_minutes",
    "train.threads", "train.device", "train.on_nan",
    "train.distributed_backend", "train.distributed_timeout_s",
    # when a run that does not learn is reported: the training itself is the same
    "train.dead_run_steps", "train.on_dead_run",
    # the learning rate: applied to the optimizer from the step the run resumes at
    "train.lr", "train.lr_scaling",
    "data.num_workers", "data.cache_dir", "data.on_bad_file", "data.original_sr",
    "output.",
)


def _is_safe(key: str) -> bool:
    return any(key == safe or (safe.endswith(".") and key.startswith(safe))
               for safe in SAFE_ON_RESUME)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}{key}."))
    return flat


_MISSING = "(unset)"


@dataclass
class Change:
    key: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.key} {self.old} -> {self.new}"


@dataclass
class ResumeVerdict:
    applied: list[Change]
    refused: list[Change]


def compare_for_resume(stored: dict[str, Any], new: dict[str, Any], saved_world_size: int = 1,
                       world_size: int = 1) -> ResumeVerdict:
    """Sort the differences between the checkpoint's configuration and the new one.
    `data.N` counts per process: what must stay is the global batch N x processes; and
    `loss.negatives.across_ranks` changes nothing for one process: what must stay is
    whether negatives come from the global batch."""
    old_flat, new_flat = _flatten(stored), _flatten(new)
    applied: list[Change] = []
    refused: list[Change] = []
    for key in sorted(set(old_flat) | set(new_flat)):
        old, value = old_flat.get(key, _MISSING), new_flat.get(key, _MISSING)
        if old == value:
            continue
        change = Change(key, old, value)
        if key == "data.N" and isinstance(old, int) and isinstance(value, int):
            same_global = old * saved_world_size == value * world_size
            (applied if same_global else refused).append(change)
        elif key == "loss.negatives.across_ranks":
            same_pool = (bool(old) or saved_world_size == 1) == (bool(value) or world_size == 1)
            (applied if same_pool else refused).append(change)
        elif _is_safe(key):
            applied.append(change)
        else:
            refused.append(change)
    return ResumeVerdict(applied, refused)


def check_resume(stored: dict[str, Any], new: dict[str, Any], run_dir: Any,
                 saved_world_size: int = 1, world_size: int = 1) -> list[Change]:
    """The safe changes, or ConfigError (one line) naming every change that breaks exact resume."""
    verdict = compare_for_resume(stored, new, saved_world_size, world_size)
    if verdict.refused:
        listed = ", ".join(str(c) for c in verdict.refused)
        keep = " ".join(f"--set {c.key}={_set_value(c.old)}" for c in verdict.refused
                        if c.old != _MISSING)
        raise ConfigError(
            f"--resume: {run_dir} was trained with other settings that change the course of the "
            f"run ({listed}); resume with the old value(s) ({keep}; a run saved before a setting "
            "existed was trained with the value shown), start over with --force, or choose "
            "another --name")
    return verdict.applied


def _set_value(value: Any) -> str:
    """A value as `--set` reads it back (YAML): false, null, [1, 2], 0.0002, constant."""
    return value if isinstance(value, str) else json.dumps(value)


def announce(changes: list[Change]) -> Optional[str]:
    """The one line that says what a resume changes, or None."""
    if not changes:
        return None
    lr_note = (" (the new learning rate is applied to the optimizer)"
               if any(c.key in ("train.lr", "train.lr_scaling") for c in changes) else "")
    return "resuming with changed settings: " + ", ".join(str(c) for c in changes) + lr_note


def apply_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the rate of every parameter group (the loaded state holds the old one)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        if "initial_lr" in group:  # a scheduler's base rate
            group["initial_lr"] = lr


def recorded_changes(payload: dict[str, Any], step: int,
                     changes: list[Change]) -> list[dict[str, Any]]:
    """The checkpoint's list of settings changes, with this resume's appended."""
    history = list(payload.get("settings_changes") or [])
    if changes:
        history.append({"step": step, "changes": {c.key: [c.old, c.new] for c in changes}})
    return history


def comparable_config(stored: dict[str, Any], checkpoint: Any) -> dict[str, Any]:
    """The checkpoint's configuration with the defaults of settings added since it was
    written filled in (as plain data), so that only real changes are compared."""
    try:
        return config_from_dict(stored).to_dict()
    except ConfigError as exc:
        raise stored_config_error(checkpoint, exc) from None


def stored_config_error(checkpoint: Any, exc: ConfigError) -> CheckpointError:
    """A checkpoint whose stored configuration does not validate: damaged, or edited."""
    more = f" (+{len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
    return CheckpointError(f"{checkpoint}: its stored configuration is not valid "
                           f"({exc.problems[0]}{more}); the file is damaged or was edited. "
                           "Restore it from a backup, or start over with --force")


def restore_learning_rate(optimizer: torch.optim.Optimizer, stored: dict[str, Any],
                          saved_world_size: int, lr: float) -> None:
    """After the optimizer state is loaded: if the run's rate changed (train.lr, lr_scaling
    or the number of processes under linear scaling), use the new one."""
    train = stored.get("train") or {}
    try:
        old = effective_lr(float(train["lr"]), str(train.get("lr_scaling", "none")), saved_world_size)
    except (KeyError, TypeError, ValueError):
        old = None
    if old != lr:
        apply_learning_rate(optimizer, lr)


def describe_run(checkpoint_path: Path) -> str:
    """'a finished run (N steps)' or 'an unfinished run (step s)', for messages."""
    try:
        payload = load_checkpoint(checkpoint_path)
    except CheckpointError:
        return "a run (its checkpoint cannot be read)"
    step = int(payload.get("step", 0))
    if payload.get("finished"):
        return f"a finished run ({step} steps)"
    return f"an unfinished run (stopped at step {step})"


def read_for_resume(folder: RunFolder, config: dict[str, Any], world_size: int, resume: bool,
                    force: bool) -> tuple[Optional[dict[str, Any]], list[Change]]:
    """The checkpoint to continue from and the safe settings changes (announced), or
    (None, []) for a new run; RunExistsError for a folder that holds a run and neither
    --resume nor --force."""
    checkpoint_path = folder.checkpoint_path
    if folder.holds_run():
        if resume:
            payload = load_checkpoint(checkpoint_path)
            changes = check_resume(comparable_config(payload["config"], checkpoint_path), config,
                                   folder.path, int(payload.get("world_size", 1)), world_size)
            announcement = announce(changes)
            if announcement:
                log.info(announcement)
            return payload, changes
        if not force:
            raise RunExistsError(
                f"{folder.path} already holds {describe_run(checkpoint_path)}. Continue it "
                "with --resume, start over with --force, or choose another --name.")
    elif resume:
        log.warning("no checkpoint in %s: starting a new run", folder.path)
    return None, []
