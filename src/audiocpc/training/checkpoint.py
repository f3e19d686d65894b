"""Checkpoints: written atomically, read with the safe (weights-only) unpickler.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts: the model and
optimizer states, the step, the loss history, the RNG states and the resolved
configuration as plain data. Nothing in it needs a pickled Python object, so
`torch.load(..., weights_only=True)` reads it, and refuses a file that would run code.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import torch

from audiocpc.errors import CheckpointError
from audiocpc.fileio import atomic_path, stale_temporaries

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1

# Test hook, for the crash tests only: when set to a number of seconds, save_checkpoint
# sleeps that long after the temporary file is complete and before it replaces an existing
# checkpoint (announcing the stall on stderr), so a test can kill the process mid-save.
SAVE_DELAY_ENV = "AUDIOCPC_TEST_SAVE_DELAY"


def _test_save_stall(path: Path) -> None:
    delay = os.environ.get(SAVE_DELAY_ENV)
    if delay and path.exists():
        sys.stderr.write(f"audiocpc test hook: stalling the save of {path} for {delay} s\n")
        sys.stderr.flush()
        time.sleep(float(delay))


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write to a temporary file in the same folder, flush it to disk, then rename it over
    the old checkpoint: a crash at any moment leaves either the old or the new file whole."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            torch.save({"format": FORMAT_VERSION, **payload}, handle)
        _test_save_stall(path)
    for stale in stale_temporaries(path):  # left by a process killed mid-save
        stale.unlink(missing_ok=True)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with weights_only=True; a file that needs arbitrary code is refused. In a folder
    written by `audiocpc export` (config.json + model.safetensors, no checkpoint.pt) the same
    payload ({"config", "model"}) is read from those files, never unpickling anything."""
    from audiocpc.training.exported import EXPORT_NAMES, is_exported_folder, read_export_payload

    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if (path.name in EXPORT_NAMES or not path.is_file()) and is_exported_folder(path.parent):
        return read_export_payload(path.parent)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path} (train a model first, or check the path)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            f"{path}: refused to load: the file holds objects other than tensors and plain data, "
            f"which could run code when unpickled. Only load checkpoints you trust. ({first})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from None
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise CheckpointError(f"{path}: not an audiocpc checkpoint (no model or config inside)")
    return payload
