"""The faster forms of ChannelNorm (layer_norm over the channels moved last) and of meanstd
pooling (two passes) compute what their definitions say, to float rounding."""

from __future__ import annotations

import pytest
import torch

from audiocpc.models.hidden import pool_frames
from audiocpc.models.layers import ChannelNorm


def _channel_norm_by_definition(norm: ChannelNorm, x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    var = x.var(dim=1, keepdim=True, unbiased=False)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return (x - mean) * torch.rsqrt(var + norm.eps) * norm.weight.view(shape) + norm.bias.view(shape)


@pytest.mark.parametrize("shape", [(3, 16, 40), (2, 8, 5, 7), (4, 32, 1)])
def test_channel_norm_normalises_each_step_across_channels(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    norm = ChannelNorm(shape[1])
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = (3 * torch.randn(*shape) + 1).requires_grad_()
    fast, slow = norm(x), _channel_norm_by_definition(norm, x)
    assert fast.shape == x.shape
    assert torch.allclose(fast, slow, atol=1e-5)
    weights = torch.randn(shape)
    fast_grads = torch.autograd.grad((fast * weights).sum(), [x, norm.weight, norm.bias])
    slow_grads = torch.autograd.grad((slow * weights).sum(), [x, norm.weight, norm.bias])
    for a, b in zip(fast_grads, slow_grads):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_channel_norm_parameters_keep_the_shape_saved_checkpoints_hold() -> None:
    """[1, C, 1] weight and bias, initialised to the identity: the shape is part of every
    checkpoint and export written so far, which must keep loading."""
    norm = ChannelNorm(6)
    assert norm.weight.shape == (1, 6, 1) and norm.bias.shape == (1, 6, 1)
    assert bool((norm.weight == 1).all()) and bool((norm.bias == 0).all())


def test_layer_norm_is_one_group_over_channels_and_time() -> None:
    """norm: layer normalises each example over all its channels and steps together, so
    the halves of the channels keep their difference (two groups would erase it)."""
    from audiocpc.models.layers import norm1d

    norm = norm1d("layer", 4)
    x = torch.randn(2, 4, 10)
    x[:, :2] += 5.0
    out = norm(x)
    torch.testing.assert_close(out.mean(dim=(1, 2)), torch.zeros(2), atol=1e-5, rtol=0)
    assert bool((out[:, :2].mean(dim=(1, 2)) > 0.5).all())


def test_meanstd_pooling_is_the_mean_then_the_population_standard_deviation() -> None:
    torch.manual_seed(0)
    frames = 5 * torch.randn(6, 23, 12) + 2
    pooled = pool_frames(frames, "meanstd")
    assert pooled.shape == (6, 24)
    assert torch.allclose(pooled[:, :12], frames.mean(dim=1), atol=1e-6)
    assert torch.allclose(pooled[:, 12:], frames.std(dim=1, unbiased=False), atol=1e-5)
    assert torch.equal(pool_frames(torch.ones(2, 4, 3), "meanstd")[:, 3:], torch.zeros(2, 3))
