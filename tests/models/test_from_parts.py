"""A CPCModel is built from parts, without a Config, and matches what the factory builds."""

from __future__ import annotations

import torch

from audiocpc import load_config
from audiocpc.models import CPCModel, NegativeSampling, build_cpc
from audiocpc.models.context import GRUContext
from audiocpc.models.encoders import Conv1dEncoder
from audiocpc.models.predictors import LinearPredictor
from audiocpc.models.similarity import DotSimilarity


def _parts(z_dim: int = 32, c_dim: int = 48, steps: int = 4) -> CPCModel:
    return CPCModel(
        Conv1dEncoder(z_dim=z_dim, strides=[5, 4, 2, 2, 2], kernels=[10, 8, 4, 4, 4],
                      filters=32, padding=[3, 2, 1, 1, 1], norm="channel"),
        GRUContext(z_dim, c_dim), LinearPredictor(c_dim, z_dim, steps), DotSimilarity(z_dim),
        steps=steps, sample_rate=8000, negatives=NegativeSampling("batch", 8))


def test_a_model_built_from_parts_trains_a_step() -> None:
    torch.manual_seed(0)
    model = _parts()
    waves = torch.randn(4, 4000)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    out = model(waves)
    assert out.logits.shape[-1] == 1 + 8 and out.logits.shape[2] == 4
    assert torch.isfinite(out.loss)
    out.loss.backward()
    optimizer.step()
    changed = [not torch.equal(a, b) for a, b in zip(before, model.parameters())]
    assert all(changed), "every parameter gets a gradient and moves"


def test_the_factory_builds_the_same_model_as_the_parts() -> None:
    config = load_config("cpc_tiny")
    torch.manual_seed(3)
    built = build_cpc(config)
    assert isinstance(built, CPCModel) and built.window is None and built.mode == "frame"
    assert built.steps == config.data.k and built.sample_rate == config.data.sample_rate
    assert built.negatives == NegativeSampling(config.loss.negatives.policy,
                                               config.loss.negatives.count,
                                               config.loss.negatives.allow_positive)
    window = build_cpc(load_config("1dconv_tiny"))
    assert window.mode == "window" and window.window == load_config("1dconv_tiny").data.crop_samples // (
        load_config("1dconv_tiny").data.T + load_config("1dconv_tiny").data.k)


def test_step_weights_given_by_hand_are_normalised_and_checked() -> None:
    model = CPCModel(Conv1dEncoder(z_dim=8, filters=8), GRUContext(8, 8), LinearPredictor(8, 8, 2),
                     DotSimilarity(8), steps=2, sample_rate=8000, step_weights=[3.0, 1.0],
                     negatives=NegativeSampling("batch", 2))
    assert torch.allclose(model.step_weights, torch.tensor([0.75, 0.25]))
    try:
        CPCModel(Conv1dEncoder(z_dim=8, filters=8), GRUContext(8, 8), LinearPredictor(8, 8, 2),
                 DotSimilarity(8), steps=2, sample_rate=8000, step_weights=[1.0])
    except ValueError as exc:
        assert "step_weights" in str(exc)
    else:
        raise AssertionError("a wrong number of step weights must be refused")
