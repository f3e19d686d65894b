"""Tiny versions of every built-in preset, for tests that need each family of models fast.
(A plain module, not conftest: tests/e2e has its own conftest.py, so `from conftest` is ambiguous.)"""

from __future__ import annotations

# Every built-in preset, shrunk so that building and running it takes milliseconds: same
# modes, encoders and context networks, few channels. Used by the HEAR and export tests.
_SMALL = ["model.z_dim=16", "model.c_dim=16"]
TINY_PRESETS: dict[str, list[str]] = {
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
}


def build_model(config):  # -> CPCModel
    """The model a configuration describes, whichever way this tree builds it (models.build_cpc
    where the model is assembled from parts, CPCModel(config) before that)."""
    from audiocpc import models

    build = getattr(models, "build_cpc", None)
    return build(config) if build is not None else models.CPCModel(config)


def tiny_config(preset: str):  # -> Config
    from audiocpc import load_config

    return load_config(preset, TINY_PRESETS[preset])
