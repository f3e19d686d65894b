"""Tiny versions of every built-in preset, for tests that need each family of models fast.
(A plain module, not conftest: tests/e2e has its own conftest.py, so `from conftest` is ambiguous.)"""

from __future__ import annotations

from pathlib import Path

import audiocpc

# Every built-in preset, shrunk so that building and running it takes milliseconds: same
# modes, encoders and context networks, few channels. Used by the HEAR and export tests.
_SMALL = ["model.z_dim=16", "model.c_dim=16"]
_TINY: dict[str, list[str]] = {
    "1dconv_gru": _SMALL + ["model.encoder.filters=16"],
    "1dconv_lstm": _SMALL + ["model.encoder.filters=16", "model.context.num_layers=2"],
    "1dconv_transformer": _SMALL + ["model.encoder.filters=16", "model.context.dff=16",
                                    "model.context.dense_units=[16]"],
    "1dconv_tiny": _SMALL + ["model.encoder.filters=16"],
    "2dconv_gru": _SMALL + ["model.encoder.channels=[4,4,4,4]", "model.encoder.dense_units=[16]"],
    "2dconv_transformer": _SMALL + ["model.encoder.channels=[4,4,4,4]", "model.encoder.dense_units=[16]",
                                    "model.context.dff=16", "model.context.dense_units=[16]"],
    "cpc_paper": _SMALL + ["model.encoder.filters=16"],
    "cpc_tiny": _SMALL + ["model.encoder.filters=16"],
    "fsdd": _SMALL + ["model.encoder.channels=[8]", "model.encoder.dense_units=[16]"],
    "clips": _SMALL + ["model.encoder.channels=[8]", "model.encoder.dense_units=[16]"],
    "recordings": _SMALL + ["model.encoder.channels=[8]", "model.encoder.dense_units=[16]"],
}
BUILTIN_PRESETS = sorted(p.stem for p in (Path(audiocpc.__file__).parent / "presets").glob("*.yaml"))
# the built-in presets of this tree that have a tiny version (the tiny_exports fixture fails
# when a preset has none, so a new preset cannot slip past the HEAR and export tests)
TINY_PRESETS = {name: _TINY[name] for name in BUILTIN_PRESETS if name in _TINY}


def build_model(config):  # -> CPCModel
    """The model a configuration describes."""
    from audiocpc.models import build_cpc

    return build_cpc(config)


def tiny_config(preset: str):  # -> Config
    from audiocpc import load_config

    return load_config(preset, TINY_PRESETS[preset])
