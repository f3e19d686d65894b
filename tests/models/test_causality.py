"""Every registered context network and predictor is causal: what it outputs at step t
depends on its inputs at steps 1..t only. Changing the inputs after t must leave the outputs
up to t unchanged (and must change some later output, so the check is not vacuous)."""

from __future__ import annotations


import pytest
import torch

from audiocpc.models import registered
from audiocpc.models.registry import build

LENGTH, WIDTH = 9, 8


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny matrices: one thread is faster


def _context(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build("context", name, {}, in_dim=WIDTH, out_dim=WIDTH, max_len=LENGTH).eval()


def _predictor(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    params = {"num_heads": 2} if name == "transformer" else {}
    return build("predictor", name, params, c_dim=WIDTH, z_dim=WIDTH, steps=3).eval()


def _check_causal(network: torch.nn.Module, run=None) -> None:  # type: ignore[no-untyped-def]
    run = run or network
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, LENGTH, WIDTH, generator=generator)
    with torch.no_grad():
        before = run(x)
        for t in range(LENGTH - 1):
            changed = x.clone()
            changed[:, t + 1 :] = torch.randn(2, LENGTH - t - 1, WIDTH, generator=generator) * 3
            after = run(changed)
            torch.testing.assert_close(after[:, : t + 1], before[:, : t + 1], atol=1e-5, rtol=1e-4,
                                       msg=lambda m: f"output at steps <= {t} saw the future: {m}")
            assert not torch.allclose(after[:, t + 1 :], before[:, t + 1 :], atol=1e-4), \
                "changing the inputs changed no later output: the check would prove nothing"


@pytest.mark.parametrize("name", registered("context"))
def test_context_network_output_at_t_ignores_later_steps(name: str) -> None:
    _check_causal(_context(name))


@pytest.mark.parametrize("name", registered("context"))
def test_context_output_at_t_reads_the_earlier_steps_of_its_own_sequence_only(name: str) -> None:
    """Causal is not enough: c_t must read z_1..z_t (else each step is encoded alone, e.g. a
    Transformer that attends across the batch instead of along time), and nothing of the
    other sequences in the batch."""
    network = _context(name)
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(3, LENGTH, WIDTH, generator=generator)
    with torch.no_grad():
        before = network(x)
        first = x.clone()
        first[:, 0] = torch.randn(3, WIDTH, generator=generator) * 3
        assert not torch.allclose(network(first)[:, -1], before[:, -1], atol=1e-4), \
            "the last step's output does not depend on the first step"
        other = x.clone()
        other[1:] = torch.randn(2, LENGTH, WIDTH, generator=generator) * 3
        torch.testing.assert_close(network(other)[0], before[0], atol=1e-5, rtol=1e-4,
                                   msg=lambda m: f"a sequence saw the other sequences: {m}")


@pytest.mark.parametrize("name", registered("predictor"))
def test_predictions_read_their_own_sequence_only(name: str) -> None:
    """A predictor's output for a sequence depends on nothing of the other sequences in the
    batch (a Transformer predictor attending across the batch fails), and the Transformer's
    last step reads the first step too."""
    predictor = _predictor(name)
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(3, LENGTH, WIDTH, generator=generator)
    with torch.no_grad():
        before = predictor(x)
        other = x.clone()
        other[1:] = torch.randn(2, LENGTH, WIDTH, generator=generator) * 3
        torch.testing.assert_close(predictor(other)[0], before[0], atol=1e-5, rtol=1e-4,
                                   msg=lambda m: f"a sequence saw the other sequences: {m}")
        if name == "transformer":
            first = x.clone()
            first[:, 0] = torch.randn(3, WIDTH, generator=generator) * 3
            assert not torch.allclose(predictor(first)[:, -1], before[:, -1], atol=1e-4)


@pytest.mark.parametrize("name", registered("context"))
def test_every_context_layer_output_at_t_ignores_later_steps(name: str) -> None:
    """The layers `hidden_states` exposes (e.g. each Transformer block) are causal too."""
    network = _context(name)
    if not hasattr(network, "layer_outputs"):
        pytest.skip(f"context '{name}' has no layer_outputs")
    layers = len(network.layer_outputs(torch.zeros(1, LENGTH, WIDTH)))
    for index in range(layers):
        _check_causal(network, lambda x, i=index: network.layer_outputs(x)[i][1])


@pytest.mark.parametrize("name", registered("predictor"))
def test_predictor_output_at_t_ignores_later_steps(name: str) -> None:
    _check_causal(_predictor(name))


def test_transformer_context_is_causal_with_a_multi_layer_dense_stack() -> None:
    """The preset-like shape (two blocks, dense units) as well as the defaults."""
    torch.manual_seed(0)
    network = build("context", "transformer", {"num_layers": 3, "dense_units": [16, 8],
                                               "dropout": 0.0},
                    in_dim=WIDTH, out_dim=WIDTH, max_len=LENGTH).eval()
    _check_causal(network)


def test_sinusoidal_positions_are_the_transformer_papers_codes() -> None:
    """PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(p / 10000^(2i/d)), by hand
    (a mutation-testing survivor: `position * div` -> `position / div` passed every test)."""
    import math

    from audiocpc.models.context import sinusoidal_positions

    length, dim = 7, 6
    codes = sinusoidal_positions(length, dim, torch.device("cpu"))
    for p in range(length):
        for i in range(dim // 2):
            angle = p / 10000 ** (2 * i / dim)
            assert abs(float(codes[p, 2 * i]) - math.sin(angle)) < 1e-5
            assert abs(float(codes[p, 2 * i + 1]) - math.cos(angle)) < 1e-5
    # an odd width (a one-head Transformer allows any): the last column is a sine, no cosine
    odd = sinusoidal_positions(length, 5, torch.device("cpu"))
    assert odd.shape == (length, 5)
    for p in range(length):
        assert abs(float(odd[p, 4]) - math.sin(p / 10000 ** (4 / 5))) < 1e-5
        assert abs(float(odd[p, 3]) - math.cos(p / 10000 ** (2 / 5))) < 1e-5


def test_pre_norm_transformer_context_is_causal_and_normalises_its_output() -> None:
    """`norm_first`: every block (and the final layer norm after them) stays causal."""
    torch.manual_seed(0)
    network = build("context", "transformer", {"norm_first": True, "dropout": 0.0},
                    in_dim=WIDTH, out_dim=WIDTH, max_len=LENGTH).eval()
    assert all(layer.norm_first for layer in network.blocks.layers)
    _check_causal(network)
    for index in range(3):  # block1, block2, c
        _check_causal(network, lambda x, i=index: network.layer_outputs(x)[i][1])
    with torch.no_grad():  # the last block's output has passed the final layer norm
        x = torch.randn(2, LENGTH, WIDTH) * 5
        normed = network.blocks(x * WIDTH ** 0.5)
    torch.testing.assert_close(normed.mean(-1), torch.zeros(2, LENGTH), atol=1e-4, rtol=0)


def _transformer_blocks_input(params: dict) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A Transformer context (dropout 0, `params`), a z, and what its first block reads for it."""
    torch.manual_seed(0)
    network = build("context", "transformer", {"dropout": 0.0, **params},
                    in_dim=WIDTH, out_dim=WIDTH, max_len=LENGTH).eval()
    seen = []
    network.blocks.register_forward_pre_hook(lambda module, args, kwargs: seen.append(args[0]),
                                             with_kwargs=True)
    z = torch.randn(2, LENGTH, WIDTH)
    with torch.no_grad():
        network(z)
    return network, z, seen[0]


@pytest.mark.parametrize("scale_input", [True, False])
def test_transformer_blocks_read_z_scaled_or_not_plus_the_position_codes(scale_input: bool) -> None:
    """`scale_input`: the blocks read z x sqrt(dim) + codes (the reference's) or z + codes."""
    from audiocpc.models.context import sinusoidal_positions

    network, z, blocks_input = _transformer_blocks_input({"scale_input": scale_input})
    scale = WIDTH ** 0.5 if scale_input else 1.0
    torch.testing.assert_close(blocks_input, z * scale + sinusoidal_positions(LENGTH, WIDTH, z.device))
    _check_causal(network)

@pytest.mark.parametrize("position", ["none", "conv"])
def test_transformer_position_choices_read_z_alone_or_a_causal_conv_of_it(position: str) -> None:
    """`position`: none hands the blocks z itself (order comes from the causal mask alone);
    conv adds a causal depthwise convolution of the last position_kernel steps of z."""
    network, z, blocks_input = _transformer_blocks_input(
        {"scale_input": False, "position": position, "position_kernel": 3})
    added = blocks_input - z
    with torch.no_grad():
        if position == "none":
            assert network.position_conv is None
            torch.testing.assert_close(added, torch.zeros_like(z), rtol=0, atol=0)
        else:
            conv = network.position_conv
            assert conv is not None and conv.kernel_size == (3,) and conv.groups == WIDTH
            # step t reads z at t-2..t, the steps before the first read as zeros
            padded = torch.cat([torch.zeros(2, 2, WIDTH), z], dim=1)
            by_hand = torch.stack([torch.nn.functional.gelu(
                (padded[:, t : t + 3] * conv.weight[:, 0].T).sum(1) + conv.bias)
                for t in range(LENGTH)], dim=1)
            torch.testing.assert_close(added, by_hand, atol=1e-5, rtol=1e-5)
    _check_causal(network)
    for index in range(3):  # block1, block2, c
        _check_causal(network, lambda x, i=index: network.layer_outputs(x)[i][1])


def test_the_causal_mask_hides_the_future_on_the_device_of_its_input() -> None:
    from audiocpc.models.layers import causal_mask

    mask = causal_mask(4, torch.device("cpu"))
    assert mask.shape == (4, 4)
    assert torch.isinf(mask).equal(torch.ones(4, 4, dtype=torch.bool).triu(1)) and (mask <= 0).all()
    assert float(mask[1, 1]) == 0.0 and float(mask[3, 0]) == 0.0 and mask[0, 1] == float("-inf")
    assert causal_mask(3, torch.device("meta")).device.type == "meta"


def test_the_position_codes_are_made_on_the_device_of_their_input() -> None:
    from audiocpc.models.context import sinusoidal_positions

    codes = sinusoidal_positions(5, 8, torch.device("meta"))
    assert codes.device.type == "meta" and codes.shape == (5, 8) and codes.dtype == torch.float32


def test_context_dropout_is_the_configured_rate() -> None:
    """dropout 0: a context network in training mode is as deterministic as in eval mode
    (torch's Transformer layer would otherwise add its own default of 0.1)."""
    for name in registered("context"):
        torch.manual_seed(0)
        params = {"dropout": 0.0, "num_layers": 2} if name != "transformer" else {"dropout": 0.0}
        network = build("context", name, params, in_dim=WIDTH, out_dim=WIDTH, max_len=LENGTH).train()
        x = torch.randn(2, LENGTH, WIDTH)
        torch.testing.assert_close(network(x), network(x), rtol=0, atol=0, msg=name)
        params["dropout"] = 0.5   # and a rate above 0 is applied between layers in training
        network = build("context", name, params, in_dim=WIDTH, out_dim=WIDTH, max_len=LENGTH).train()
        assert not torch.equal(network(x), network(x)), name


@pytest.mark.parametrize("name", registered("context"))
def test_context_networks_keep_every_tensor_on_the_inputs_device(name: str) -> None:
    """On the meta device, which (like CUDA) refuses to mix with a CPU tensor: a tensor made
    without `device=` (a mask, position codes) fails here the way it would on a GPU."""
    network = _context(name).to("meta")
    x = torch.randn(2, LENGTH, WIDTH, device="meta")
    assert network(x).device.type == "meta"
    assert all(out.device.type == "meta" for _, out in network.layer_outputs(x))
