"""The conv encoder's time-major matmul path computes exactly what nn.Conv1d computes."""

from __future__ import annotations

import pytest
import torch

from audiocpc.models.encoders import Conv1dEncoder


@pytest.mark.parametrize("options", [
    {},  # the reference encoder
    {"padding": [3, 2, 1, 1, 1], "norm": "channel", "activation_fn": "relu"},  # cpc_paper's
    {"strides": [5, 4, 5], "kernels": [10, 8, 10], "filters": 32, "dropout": 0.0},
])
def test_time_major_path_matches_conv1d(options: dict) -> None:
    torch.manual_seed(0)
    encoder = Conv1dEncoder(z_dim=48, **options)
    assert encoder.time_major
    waves = torch.randn(5, 1999)
    fast = encoder(waves)
    fast_grads = torch.autograd.grad(fast.square().sum(), list(encoder.parameters()))
    encoder.time_major = False
    reference = encoder(waves)
    reference_grads = torch.autograd.grad(reference.square().sum(), list(encoder.parameters()))
    assert fast.shape == reference.shape == (5, encoder.output_length(1999), 48)
    assert torch.allclose(fast, reference, atol=1e-5, rtol=1e-4)
    for a, b in zip(fast_grads, reference_grads):
        assert torch.allclose(a, b, atol=1e-4 * b.abs().max().item(), rtol=1e-3)


def test_other_shapes_keep_conv1d() -> None:
    assert not Conv1dEncoder(z_dim=8, strides=[5, 4], kernels=[10, 9]).time_major
    assert not Conv1dEncoder(z_dim=8, norm="batch").time_major
