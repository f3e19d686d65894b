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


@pytest.mark.parametrize("options", [
    {"strides": [5, 4], "kernels": [10, 8], "filters": 8},
    {"strides": [3, 2], "kernels": [4, 5], "filters": 8, "padding": [1, 2]},
])
def test_layer_geometry_is_each_blocks_receptive_field(options: dict) -> None:
    """layer_geometry's (hop, first, span): block output t reads exactly the input samples
    [hop * t + first, hop * t + first + span). Checked by changing one sample just inside and
    just outside that range (what shared-frame embedding relies on)."""
    torch.manual_seed(0)
    encoder = Conv1dEncoder(z_dim=8, **options).eval()
    hop, first, span = encoder.layer_geometry()[-1]
    kernels, strides = options["kernels"], options["strides"]
    assert hop == strides[0] * strides[1] and span == kernels[0] + strides[0] * (kernels[1] - 1)
    waves = torch.randn(1, 400)
    t = 3
    start = hop * t + first

    def last_block(x: torch.Tensor) -> torch.Tensor:
        return encoder.layer_outputs(x)[len(kernels) - 1][1]

    with torch.no_grad():
        outputs = encoder.layer_outputs(waves)
        # named and sized as hidden_states and shared frames expect
        assert [name for name, _ in outputs] == ["encoder.conv1", "encoder.conv2", "z"]
        assert encoder.layer_lengths(400) == [x.shape[1] for _, x in outputs[:-1]]
        assert encoder.output_length(400) == outputs[-1][1].shape[1]
        before = last_block(waves)
        for sample, inside in ((start, True), (start + span - 1, True), (start - 1, False),
                               (start + span, False)):
            changed = waves.clone()
            changed[0, sample] += 10.0
            moved = not torch.allclose(last_block(changed)[0, t], before[0, t])  # [B, L, C]
            assert moved == inside, (sample, inside)
