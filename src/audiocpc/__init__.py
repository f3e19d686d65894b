"""audiocpc: Contrastive Predictive Coding for raw audio.

The public names are imported lazily, so `import audiocpc` stays cheap and has no side
effects; `audiocpc.load(run_dir)` rebuilds a trained model from its run folder.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Config": ("audiocpc.config", "Config"),
    "load_config": ("audiocpc.api", "load_config"),
    "train": ("audiocpc.training.trainer", "train"),
    "CPCModel": ("audiocpc.models", "CPCModel"),
    "build_cpc": ("audiocpc.models", "build_cpc"),
    "register": ("audiocpc.models.registry", "register"),
    "make_demo_dataset": ("audiocpc.data.synthetic", "make_demo_dataset"),
    "load": ("audiocpc.api", "load"),
    "CPCEmbedder": ("audiocpc.api", "CPCEmbedder"),
    "CPCTransformer": ("audiocpc.api", "CPCTransformer"),
    "embed_folder": ("audiocpc.api", "embed_folder"),
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'audiocpc' has no attribute {name!r}")
