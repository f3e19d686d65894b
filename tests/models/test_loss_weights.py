"""loss.step_weights reaches the loss: the training loss is the weighted mean of the per-step
losses with the configured weights (uniform, linear_decay = the nearest step weighs most,
or a list), normalised to sum to 1."""

from __future__ import annotations

import pytest
import torch

from audiocpc import load_config
from audiocpc.config import step_weights
from audiocpc.models import build_cpc
from audiocpc.models.loss import info_nce

TINY = ["model.z_dim=16", "model.c_dim=16", "model.encoder.filters=8", "data.N=4"]  # k = 4


def _config(weights: str):  # type: ignore[no-untyped-def]
    return load_config("1dconv_tiny", TINY + [f"loss.step_weights={weights}"])


def test_linear_decay_weighs_the_nearest_step_most() -> None:
    assert step_weights(_config("linear_decay")) == pytest.approx([0.4, 0.3, 0.2, 0.1])


def test_uniform_and_listed_weights_are_normalised() -> None:
    assert step_weights(_config("uniform")) == pytest.approx([0.25] * 4)
    assert step_weights(_config("[3,1,0,0]")) == pytest.approx([0.75, 0.25, 0.0, 0.0])


def test_info_nce_loss_is_the_weighted_sum_of_step_losses() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 2, 4, 6) * 3  # [B, P, K, 1 + M]
    weights = torch.tensor([0.7, 0.2, 0.1, 0.0])
    out = info_nce(logits, weights)
    assert not torch.allclose(out.step_loss, out.step_loss.mean())  # the weights matter here
    torch.testing.assert_close(out.loss, (out.step_loss * weights).sum())
    assert not torch.isclose(out.loss, out.step_loss.mean())


@pytest.mark.parametrize("weights, expected", [
    ("linear_decay", [0.4, 0.3, 0.2, 0.1]),
    ("[0,0,0,1]", [0.0, 0.0, 0.0, 1.0]),
    ("[2,0,1,1]", [0.5, 0.0, 0.25, 0.25]),
])
def test_model_loss_uses_the_configured_step_weights(weights: str, expected: list[float]) -> None:
    torch.manual_seed(0)
    config = _config(weights)
    model = build_cpc(config).eval()
    waves = torch.randn(config.data.N, config.data.crop_samples)
    with torch.no_grad():
        out = model(waves)
    expected_loss = (out.step_loss * torch.tensor(expected)).sum()
    torch.testing.assert_close(out.loss, expected_loss)
    # with weights that are not uniform, the uniform mean would be another number
    assert abs(float(out.loss) - float(out.step_loss.mean())) > 1e-4
