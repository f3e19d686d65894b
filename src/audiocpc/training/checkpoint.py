"""Checkpoints: written atomically, read with the safe (weights-only) unpickler.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts: the model and
optimizer states, the step, the loss history, the RNG states and the resolved
configuration as plain data. Nothing in it needs a pickled Python object, so
`torch.load(..., weights_only=True)` reads it, and refuses a file that would run code.

Beside it, `checkpoint.pt.sha256` holds its SHA-256 (`sha256sum -c` reads it), checked on
every load, so bytes damaged after the write (disk, copy) are refused instead of giving a
silently different model. While a save is in flight the file also lists the hash of the
checkpoint it replaces, so a kill between the two renames leaves a loadable pair. A
checkpoint without the file (written before it existed) loads as before.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import torch

from audiocpc.errors import CheckpointError
from audiocpc.fileio import (atomic_path, atomic_write_text, disk_full_error, is_disk_full,
                             sha256_bytes, sha256_file, stale_temporaries)

CHECKPOINT_NAME = "checkpoint.pt"
HASH_SUFFIX = ".sha256"
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
    # Serialised in memory first: on a full disk a plain write raises ENOSPC, where torch's
    # own writer fails with "unexpected pos".
    buffer = io.BytesIO()
    torch.save({"format": FORMAT_VERSION, **payload}, buffer)
    data = buffer.getbuffer()
    digest = sha256_bytes(data)
    previous = path.exists()
    writing = path
    try:
        with atomic_path(path) as tmp:
            writing = tmp
            with open(tmp, "wb") as handle:
                handle.write(data)
            # the new hash first, still listing the current file's: either file passes the check
            _write_hashes(path, [digest] + _listed_hashes(path))
            _test_save_stall(path)
        _write_hashes(path, [digest])
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        then = (f"the previous checkpoint {path} is intact; free space and run the same command "
                "with --resume" if previous else
                "no checkpoint was written yet; free space and run the command again")
        raise disk_full_error(getattr(exc, "filename", None) or writing, then) from None
    # left by processes killed mid-save (the run folder's lock keeps out live ones)
    for stale in stale_temporaries(path):
        stale.unlink(missing_ok=True)


def hash_file(path: Path) -> Path:
    return path.with_name(path.name + HASH_SUFFIX)


def file_sha256(path: Path) -> str:
    return sha256_file(path)


def _listed_hashes(path: Path) -> list[str]:
    """The hashes `checkpoint.pt.sha256` accepts for `path` ([] without the file)."""
    try:
        text = hash_file(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return []
    return [line.split()[0].lower() for line in text.splitlines() if line.split()][:3]


def _write_hashes(path: Path, digests: list[str]) -> None:
    atomic_write_text(hash_file(path), "".join(f"{d}  {path.name}\n" for d in dict.fromkeys(digests)))


def _verify_hash(path: Path) -> None:
    if not hash_file(path).exists():
        return  # written before checkpoints had a hash
    expected = _listed_hashes(path)
    if file_sha256(path) not in expected:
        raise CheckpointError(
            f"{path}: its content does not match the hash in {hash_file(path).name}: the file "
            "was damaged after it was written (disk or copy error). Restore it from a backup, "
            "or start over with --force")


def check_payload(payload: Any, path: Path) -> dict[str, Any]:
    """The payload if its entries have the types the trainer wrote and its weights are
    finite; else CheckpointError naming the entry."""
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise CheckpointError(f"{path}: not an audiocpc checkpoint (no model or config inside)")

    def wrong(entry: str, expected: str) -> CheckpointError:
        found = type(payload[entry]).__name__
        return CheckpointError(f"{path}: damaged checkpoint: its '{entry}' entry is a {found}, not "
                               f"{expected}. Restore it from a backup, or start over with --force")

    if not isinstance(payload["config"], dict):
        raise wrong("config", "a mapping of settings")
    model = payload["model"]
    if not isinstance(model, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in model.items()):
        raise wrong("model", "a mapping of tensor names to tensors")
    if "optimizer" in payload and not isinstance(payload["optimizer"], dict):
        raise wrong("optimizer", "an optimizer state (a mapping)")
    if "step" in payload and (isinstance(payload["step"], bool)
                              or not isinstance(payload["step"], int) or payload["step"] < 0):
        raise wrong("step", "a step count (an integer >= 0)")
    for name, tensor in model.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(
                f"{path}: the model's weights hold NaN or infinite values ({bad} of "
                f"{tensor.numel()} in {name}): the run diverged before this checkpoint was "
                "written. Use an earlier copy, or start over with --force (a lower train.lr, "
                "train.grad_clip)")
    return payload


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
        _verify_hash(path)
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            f"{path}: refused to load: the file holds objects other than tensors and plain data, "
            f"which could run code when unpickled. Only load checkpoints you trust. ({first})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: not a readable checkpoint ({first})") from None
    return check_payload(payload, path)
