"""CPCModel.hidden_states: every layer, named, with its frame rate and geometry (s3prl-style)."""

from __future__ import annotations

import pytest
import torch
from tiny_models import build_model, tiny_config

from audiocpc.models import CPCModel
from audiocpc.models.hidden import pool_frames

EXPECTED_LAYERS = {
    "1dconv_gru": [f"encoder.conv{i}" for i in range(1, 6)] + ["z", "c"],
    "1dconv_lstm": [f"encoder.conv{i}" for i in range(1, 6)] + ["z", "context.layer1", "c"],
    "1dconv_transformer": [f"encoder.conv{i}" for i in range(1, 6)] + ["z", "context.block1", "context.block2", "c"],
    "2dconv_gru": ["encoder.logmel"] + [f"encoder.conv{i}" for i in range(1, 5)] + ["z", "c"],
    "cpc_tiny": [f"encoder.conv{i}" for i in range(1, 5)] + ["z", "c"],
    "fsdd": ["encoder.logmel", "encoder.conv1", "z", "c"],
}


def _model(preset: str) -> CPCModel:
    torch.manual_seed(0)
    return build_model(tiny_config(preset)).eval()


@pytest.mark.parametrize("preset", sorted(EXPECTED_LAYERS))
def test_every_layer_is_named_and_z_and_c_are_the_models(preset: str) -> None:
    model = _model(preset)
    waves = 0.3 * torch.randn(2, model.sample_rate)
    states = model.hidden_states(waves)
    assert states.names == EXPECTED_LAYERS[preset]
    z, c, _ = model.extract_features(waves)
    assert torch.allclose(states["z"], z, atol=1e-5) and torch.allclose(states["c"], c, atol=1e-5)
    for name, x in zip(states.names, states.hidden_states):
        assert x.ndim == 3 and x.shape[0] == 2 and torch.isfinite(x).all(), name
    layout = states.as_dict()
    assert len(layout["hidden_states"]) == len(states.names)
    assert layout["downsample_rates"]["c"] == states.hops["z"]
    if model.window is not None:  # one vector per window in every layer
        assert {x.shape[1] for x in states.hidden_states} == {model.sample_rate // model.window}
        assert set(states.hops.values()) == {model.window}


def test_frame_mode_layers_have_their_own_rates_and_centres() -> None:
    model = _model("cpc_tiny")  # strides 5, 4, 2, 2; kernels 10, 8, 4, 4; padding 3, 2, 1, 1 at 8 kHz
    states = model.hidden_states(torch.zeros(1, 8000))
    assert [states.hops[f"encoder.conv{i}"] for i in range(1, 5)] == [5, 20, 40, 80]
    assert [states["encoder.conv1"].shape[1], states["z"].shape[1]] == [1600, 100]
    assert states.frame_rate("z") == 100.0 and states.frame_rate("encoder.conv1") == 1600.0
    # conv1 output t reads samples [5t - 3, 5t + 7): centred at 5t + 1.5
    assert torch.allclose(states.centres("encoder.conv1", 3), torch.tensor([1.5, 6.5, 11.5], dtype=torch.float64))
    with pytest.raises(KeyError, match="no layer named 'nope'; the layers are: encoder.conv1"):
        states["nope"]


def test_padded_rows_report_their_valid_frames_per_layer() -> None:
    model = _model("cpc_tiny")
    short, long = 0.3 * torch.randn(4000), 0.3 * torch.randn(8000)
    batch = torch.zeros(2, 8000)
    batch[0, :4000], batch[1] = short, long
    states = model.hidden_states(batch, torch.tensor([4000, 8000]))
    alone = model.hidden_states(short[None])
    for name in ("encoder.conv1", "encoder.conv4", "z", "c"):
        valid = int(states.lengths[name][0])
        assert valid == alone[name].shape[1] and int(states.lengths[name][1]) == states[name].shape[1]
        # away from the end, where the padding is read, the padded row is the short input's
        inner = valid - 4
        assert torch.allclose(states[name][0, :inner], alone[name][0, :inner], atol=1e-5), name


def test_two_layer_recurrent_context_gives_each_layer() -> None:
    model = _model("1dconv_lstm")
    states = model.hidden_states(0.3 * torch.randn(1, 4410 * 2))
    first = torch.nn.LSTM(16, 16, batch_first=True).requires_grad_(False)  # layer 1 alone
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        getattr(first, f"{name}_l0").copy_(getattr(model.context.rnn, f"{name}_l0"))
    expected, _ = first(states["z"])
    assert torch.allclose(states["context.layer1"], expected, atol=1e-6)


def test_pooling_of_frames() -> None:
    frames = torch.tensor([[[1.0, 2.0], [3.0, 6.0]]])
    assert pool_frames(frames, "mean").tolist() == [[2.0, 4.0]]
    assert pool_frames(frames, "meanstd").tolist() == [[2.0, 4.0, 1.0, 2.0]]
    assert pool_frames(frames, "meanmax").tolist() == [[2.0, 4.0, 3.0, 6.0]]
    assert pool_frames(frames, "last").tolist() == [[3.0, 6.0]]
    with pytest.raises(ValueError, match="unknown pooling 'median'"):
        pool_frames(frames, "median")


def test_frames_for_counts_the_whole_windows_of_each_length() -> None:
    from audiocpc import load_config
    from audiocpc.models import build_cpc

    model = build_cpc(load_config("1dconv_tiny"))  # window mode: 500-sample windows
    assert model.window == 500
    lengths = torch.tensor([6000, 4999, 500, 499])
    assert model.frames_for(lengths).tolist() == [12, 9, 1, 0]
    frame_model = _model("cpc_tiny")   # frame mode: the encoder's own output length
    assert frame_model.frames_for(torch.tensor([8000])).tolist() == [frame_model.encode(torch.zeros(1, 8000)).shape[1]]


class _PerSampleEncoder(torch.nn.Module):
    """A plug-in encoder that describes nothing (no layer_outputs, no geometry): one z per
    input sample."""

    def __init__(self, z_dim: int):
        super().__init__()
        self.proj = torch.nn.Linear(1, z_dim)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        return self.proj(waves.unsqueeze(-1))


def test_an_encoder_that_describes_nothing_gives_z_at_its_own_rate() -> None:
    """hidden_states of a plug-in encoder without layer_outputs: z alone (then the context's
    layers), its hop estimated from its frame count: one frame per sample here, hop 1."""
    model = _model("cpc_tiny")
    model.encoder = _PerSampleEncoder(model.encoder.head.out_features).eval()
    waves = 0.3 * torch.randn(2, 50)
    with torch.no_grad():
        states = model.hidden_states(waves)
        z = model.encoder(waves)
    assert states.names == ["z", "c"]
    torch.testing.assert_close(states["z"], z)
    assert states.hops["z"] == 1 and states.spans["z"] == 1 and states.firsts["z"] == 0


def test_last_pooling_is_the_final_frame() -> None:
    frames = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    torch.testing.assert_close(pool_frames(frames, "last"), frames[:, 3])


class _OneFrameEncoder(_PerSampleEncoder):
    """One z for the whole input (the mean over its samples)."""

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        return super().forward(waves).mean(dim=1, keepdim=True)


def test_an_encoder_of_one_frame_has_the_input_as_its_hop() -> None:
    model = _model("cpc_tiny")
    model.encoder = _OneFrameEncoder(model.encoder.head.out_features).eval()
    with torch.no_grad():
        states = model.hidden_states(0.3 * torch.randn(2, 50))
    assert states["z"].shape[1] == 1 and states.hops["z"] == 50 and states.spans["z"] == 50
