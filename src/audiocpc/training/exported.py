"""The self-contained model folder: config.json + model.safetensors (the Hugging Face Hub
layout). Written by `audiocpc export`, read by `audiocpc.load`; reading never unpickles."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

from audiocpc.fileio import atomic_path
from audiocpc.config import Config
from audiocpc.errors import CheckpointError
from audiocpc.models import CPCModel

EXPORT_CONFIG = "config.json"
EXPORT_WEIGHTS = "model.safetensors"
EXPORT_FORMAT = "audiocpc-export"
EXPORT_VERSION = 1
EXPORT_NAMES = (EXPORT_CONFIG, EXPORT_WEIGHTS)


def _package_version() -> str:
    try:
        return metadata.version("audiocpc")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "unknown"


def is_exported_folder(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / EXPORT_CONFIG).is_file() and (folder / EXPORT_WEIGHTS).is_file()


def atomic_write(path: Path, write: Any) -> None:
    """`write(temp_path)`, then rename over `path` (fileio's atomic replacement)."""
    with atomic_path(path) as tmp:
        write(tmp)


def export_config(config: Config, name: str) -> dict[str, Any]:
    """What config.json holds: the format, a summary for other tools, and the full configuration."""
    window = None
    if config.model.mode == "window":
        from audiocpc.config import window_samples

        window = window_samples(config)
    return {
        "format": EXPORT_FORMAT, "format_version": EXPORT_VERSION, "audiocpc_version": _package_version(),
        "name": name, "sample_rate": config.data.sample_rate, "mode": config.model.mode,
        "window_samples": window, "z_dim": config.model.z_dim, "c_dim": config.model.c_dim,
        "inputs": {"waveform": "float32 [batch, samples], mono, at sample_rate"},
        # training scaled each whole recording to zero mean and unit variance: do the same
        "standardize_recordings": bool(config.data.standardize),
        "outputs": {"z": "float32 [batch, frames, z_dim]", "c": "float32 [batch, frames, c_dim]"},
        "config": config.to_dict(),
    }


def write_safetensors(model: CPCModel, config: Config, out_dir: str | Path, name: str) -> list[Path]:
    """config.json + model.safetensors of `model` in `out_dir`."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    # safetensors wants contiguous tensors that do not share memory
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    weights, meta = out_dir / EXPORT_WEIGHTS, out_dir / EXPORT_CONFIG
    atomic_write(weights, lambda p: save_file(state, str(p), metadata={"format": EXPORT_FORMAT}))
    text = json.dumps(export_config(config, name), indent=2) + "\n"
    atomic_write(meta, lambda p: p.write_text(text, encoding="utf-8"))
    return [meta, weights]


def read_export_payload(folder: str | Path) -> dict[str, Any]:
    """{"config": the configuration as plain data, "model": the weights, "name"} of an exported
    folder, in the layout of a checkpoint; safetensors and JSON only, nothing unpickled."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        meta = json.loads((folder / EXPORT_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder / EXPORT_CONFIG}: not readable JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT or "config" not in meta:
        raise CheckpointError(f"{folder / EXPORT_CONFIG}: not an audiocpc export (no "
                              f"\"format\": \"{EXPORT_FORMAT}\"); write one with `audiocpc export`")
    if int(meta.get("format_version", 0)) > EXPORT_VERSION:
        raise CheckpointError(f"{folder / EXPORT_CONFIG}: export format {meta['format_version']} is "
                              f"newer than this audiocpc reads ({EXPORT_VERSION}); upgrade audiocpc")
    try:
        state = load_file(str(folder / EXPORT_WEIGHTS))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{folder / EXPORT_WEIGHTS}: not a readable safetensors file ({exc})") from None
    return {"config": meta["config"], "model": state, "name": str(meta.get("name") or folder.name)}
