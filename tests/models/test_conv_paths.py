"""model.encoder.conv_path: each conv layer runs as a matmul on time-major activations or as
oneDNN's conv1d; `auto` times both per layer on the first call and keeps the faster. Every
choice computes what conv1d computes, the choice is said in one line, and it travels with
the state dict (so a resumed run computes with the same paths, rounding included)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, Union

import pytest
import torch
from torch import nn

from audiocpc import load_config
from audiocpc.errors import ConfigError
from audiocpc.models import encoders
from audiocpc.models.encoders import Conv1dEncoder
from audiocpc.training.checkpoint import load_checkpoint
from audiocpc.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REFERENCE: dict[str, Any] = {"filters": 16, "norm": "channel"}  # 1dconv_gru's geometry, fewer filters
PAPER: dict[str, Any] = {"filters": 16, "padding": [3, 2, 1, 1, 1], "norm": "channel", "activation_fn": "relu"}


class FakeCost:
    """A clock that advances only inside the conv calls, by a cost per (layer, path): the
    paths `auto` should keep are then known."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, costs: dict[tuple[int, bool], float]):
        self.now, self.calls, self.costs = 0.0, 0, costs
        self.layers: dict[int, int] = {}
        real = encoders._conv_in_layout

        def costed(x: torch.Tensor, time_major: bool, conv: nn.Conv1d, matmul: bool) -> torch.Tensor:
            self.calls += 1
            self.now += self.costs[(self.layers[id(conv)], matmul)]
            return real(x, time_major, conv, matmul)

        monkeypatch.setattr(encoders, "_conv_in_layout", costed)
        monkeypatch.setattr(encoders, "clock", lambda: self.now)

    def watch(self, encoder: Conv1dEncoder) -> None:
        convs = [m for m in encoder.convs if isinstance(m, nn.Conv1d)]
        self.layers = {id(conv): index for index, conv in enumerate(convs)}


def _forward_and_grads(encoder: Conv1dEncoder, waves: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    out = encoder(waves)
    return out.detach(), list(torch.autograd.grad(out.square().sum(), list(encoder.parameters())))


@pytest.mark.parametrize("options", [REFERENCE, PAPER])
@pytest.mark.parametrize("path", ["matmul", "conv1d", "auto", ["conv1d", "matmul", "matmul", "conv1d", "matmul"],
                                  ["matmul", "conv1d", "conv1d", "conv1d", "matmul"]])
def test_every_path_computes_what_conv1d_computes(options: dict, path: Union[str, list[str]]) -> None:
    torch.manual_seed(0)
    encoder = Conv1dEncoder(z_dim=24, conv_path=path, **options)  # type: ignore[arg-type]
    waves = torch.randn(3, 1999)
    out, grads = _forward_and_grads(encoder, waves)
    chosen = encoder.layer_paths()
    assert chosen is not None and set(chosen) <= {"matmul", "conv1d"}
    if isinstance(path, list):
        assert chosen == path
    elif path != "auto":
        assert chosen == [path] * 5
    encoder.time_major = False  # the plain nn.Conv1d stack
    reference, reference_grads = _forward_and_grads(encoder, waves)
    assert out.shape == reference.shape == (3, encoder.output_length(1999), 24)
    assert torch.allclose(out, reference, atol=1e-5, rtol=1e-4)
    for a, b in zip(grads, reference_grads):
        assert torch.allclose(a, b, atol=1e-4 * b.abs().max().item(), rtol=1e-3)


def test_auto_keeps_the_faster_path_of_each_layer_says_so_and_measures_once(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # conv1 and conv5 faster as matmuls, conv2-4 as conv1d (what an AMD EPYC showed)
    costs = {(0, True): 1.0, (0, False): 2.0, (1, True): 3.0, (1, False): 2.0, (2, True): 2.0, (2, False): 1.0,
             (3, True): 2.0, (3, False): 1.5, (4, True): 1.0, (4, False): 3.0}
    fake = FakeCost(monkeypatch, costs)
    torch.manual_seed(0)
    encoder = Conv1dEncoder(z_dim=8, conv_path="auto", **REFERENCE)
    fake.watch(encoder)
    assert encoder.layer_paths() is None
    with caplog.at_level(logging.INFO, logger="audiocpc"):
        encoder(torch.randn(6, 588)).sum().backward()
    expected = ["matmul", "conv1d", "conv1d", "conv1d", "matmul"]
    assert encoder.layer_paths() == expected
    assert encoder.conv_paths.tolist() == [1, 2, 2, 2, 1]  # the buffer the checkpoint keeps
    lines = [r.getMessage() for r in caplog.records if "conv_path=auto" in r.getMessage()]
    assert lines == ["model.encoder.conv_path=auto: conv1 matmul, conv2 conv1d, conv3 conv1d, conv4 conv1d, "
                     "conv5 matmul (ms matmul/conv1d per layer, forward+backward of 6 x 588 samples: "
                     "1000.0/2000.0, 3000.0/2000.0, 2000.0/1000.0, 2000.0/1500.0, 1000.0/3000.0)"]
    calls = fake.calls
    encoder(torch.randn(6, 588))
    assert fake.calls == calls + 5  # one call per layer: nothing timed again


def test_auto_under_inference_mode_times_forwards_only(caplog: pytest.LogCaptureFixture) -> None:
    encoder = Conv1dEncoder(z_dim=8, conv_path="auto", **PAPER)
    with caplog.at_level(logging.INFO, logger="audiocpc"), torch.inference_mode():
        out = encoder(torch.randn(2, 4000))
    assert out.shape == (2, encoder.output_length(4000), 8)
    assert encoder.layer_paths() is not None
    assert any("conv_path=auto" in r.getMessage() and ", forward of 2 x 4000 samples" in r.getMessage()
               for r in caplog.records)


def _no_clock() -> float:
    raise AssertionError("the paths were measured again")


def test_the_choice_travels_with_the_state_dict(monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = Conv1dEncoder(z_dim=8, conv_path=["conv1d", "matmul", "conv1d", "matmul", "matmul"], **REFERENCE)
    state = chosen.state_dict()
    assert state["conv_paths"].tolist() == [2, 1, 2, 1, 1]
    monkeypatch.setattr(encoders, "clock", _no_clock)
    resumed = Conv1dEncoder(z_dim=8, conv_path="auto", **REFERENCE)
    resumed.load_state_dict(state)  # an auto run resumed: the paths it chose, not measured again
    resumed(torch.randn(2, 588))
    assert resumed.layer_paths() == ["conv1d", "matmul", "conv1d", "matmul", "matmul"]
    pinned = Conv1dEncoder(z_dim=8, conv_path="conv1d", **REFERENCE)
    pinned.load_state_dict(state)  # a path set explicitly wins over the checkpoint's
    assert pinned.layer_paths() == ["conv1d"] * 5
    old = {k: v for k, v in state.items() if k != "conv_paths"}  # a checkpoint from before the buffer
    fresh = Conv1dEncoder(z_dim=8, conv_path="matmul", **REFERENCE)
    fresh.load_state_dict(old)
    assert fresh.layer_paths() == ["matmul"] * 5
    undecided = Conv1dEncoder(z_dim=8, conv_path="auto", **REFERENCE).state_dict()  # saved before choosing
    resumed.load_state_dict(undecided)  # keeps the choice it made
    assert resumed.layer_paths() == ["conv1d", "matmul", "conv1d", "matmul", "matmul"]


def test_convs_without_a_matmul_path_use_conv1d_whatever_the_setting() -> None:
    encoder = Conv1dEncoder(z_dim=8, strides=[5, 4], kernels=[10, 9], filters=8, conv_path="auto")
    assert encoder.layer_paths() == ["conv1d", "conv1d"]
    with pytest.raises(ValueError, match="no matmul path"):
        encoder.set_layer_paths(["matmul", "conv1d"])


@pytest.mark.parametrize("value, message", [
    ("fast", "model.encoder.conv_path: Input should be 'auto', 'matmul' or 'conv1d'; or Input "
             "should be a valid list (got 'fast')"),
    ("[matmul, conv1d]", "model.encoder: conv_path: one path per conv layer (4), each matmul or conv1d; got"),
    ("[matmul, conv1d, fast, conv1d]", "model.encoder.conv_path: Input should be 'auto', "
     "'matmul' or 'conv1d'; or item 2: Input should be 'matmul' or 'conv1d'"),
])
def test_a_bad_conv_path_is_one_error_naming_the_setting(value: str, message: str) -> None:
    from audiocpc.models.factory import build_cpc

    with pytest.raises(ConfigError) as info:
        build_cpc(load_config("cpc_tiny", [f"model.encoder.conv_path={value}"]))
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.slow  # three short training runs
def test_an_auto_run_resumes_with_its_paths_and_trains_like_them_set_by_hand(
        tmp_path: Path, tone_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = ["model.z_dim=16", "model.c_dim=16", "model.encoder.filters=8", "data.N=2", "train.device=cpu",
            "train.validation_fraction=0", "train.steps_per_epoch=2", "train.checkpoint_every=2",
            "train.lr_schedule=constant"]  # the schedule would depend on train.epochs, which the resume raises
    costs = {(0, True): 1.0, (0, False): 2.0, (1, True): 2.0, (1, False): 1.0, (2, True): 1.0, (2, False): 2.0,
             (3, True): 2.0, (3, False): 1.0}
    fake = FakeCost(monkeypatch, costs)
    layers: dict[int, int] = {}
    real_init = Conv1dEncoder.__init__

    @functools.wraps(real_init)  # the registry reads the signature
    def init_and_watch(self: Conv1dEncoder, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        layers.update({id(m): i for i, m in enumerate(c for c in self.convs if isinstance(c, nn.Conv1d))})
        fake.layers = layers

    monkeypatch.setattr(Conv1dEncoder, "__init__", init_and_watch)
    chosen = ["matmul", "conv1d", "matmul", "conv1d"]

    def config(out: Path, path: str, epochs: int) -> Any:
        return load_config("cpc_tiny", [f"output.dir={out}", *tiny, f"model.encoder.conv_path={path}",
                                        f"train.epochs={epochs}"])

    train(config(tmp_path / "auto", "auto", 1), tone_dir, progress=False)
    monkeypatch.setattr(encoders, "clock", _no_clock)
    resumed = train(config(tmp_path / "auto", "auto", 2), tone_dir, resume=True, progress=False)
    assert load_checkpoint(resumed.run_dir)["model"]["encoder.conv_paths"].tolist() == [1, 2, 1, 2]
    by_hand = train(config(tmp_path / "hand", "[" + ", ".join(chosen) + "]", 2), tone_dir, progress=False)
    assert resumed.step_losses == by_hand.step_losses
    a, b = load_checkpoint(resumed.run_dir)["model"], load_checkpoint(by_hand.run_dir)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_each_conv_layer_runs_on_the_path_set_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mixed paths: layer i runs on paths[i] (not a neighbour's), and the output is the plain
    conv1d stack's."""
    torch.manual_seed(0)
    encoder = Conv1dEncoder(z_dim=16, filters=16)  # the reference geometry: 5 layers
    waves = torch.randn(2, 2000)
    with torch.no_grad():
        encoder.set_layer_paths(["conv1d"] * 5)
        plain = encoder(waves)
        paths = ["matmul", "conv1d", "conv1d", "matmul", "conv1d"]
        encoder.set_layer_paths(paths)
        used: list[bool] = []
        real = encoders._conv_in_layout

        def spy(x: torch.Tensor, time_major: bool, conv: nn.Conv1d, matmul: bool) -> torch.Tensor:
            used.append(matmul)
            return real(x, time_major, conv, matmul)

        monkeypatch.setattr(encoders, "_conv_in_layout", spy)
        mixed = encoder(waves)
    assert used == [p == "matmul" for p in paths]
    torch.testing.assert_close(mixed, plain, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("paths", [["matmul", "conv1d"], ["matmul", "conv1d", "fast", "conv1d", "matmul"]])
def test_setting_paths_refuses_a_wrong_count_or_name(paths: list[str]) -> None:
    encoder = Conv1dEncoder(z_dim=8, filters=8)
    with pytest.raises(ValueError, match=r"per conv layer \(5\)"):
        encoder.set_layer_paths(paths)


@pytest.mark.parametrize("training", [True, False])
def test_auto_times_what_the_run_does_backward_only_in_training(
        training: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """`auto` times forward+backward (inputs that need a gradient, but not the waveform) when
    gradients are on, and forward alone in inference."""
    torch.manual_seed(0)
    encoder = Conv1dEncoder(z_dim=8, filters=8, conv_path="auto")
    timed: list[bool] = []
    real = encoders._fastest_call

    def spy(inputs: torch.Tensor, *args: Any) -> float:
        timed.append(inputs.requires_grad)
        return real(inputs, *args)

    monkeypatch.setattr(encoders, "_fastest_call", spy)
    with torch.set_grad_enabled(training):
        encoder(torch.randn(2, 2000))
    per_layer = timed[::2]  # each layer is timed on both paths with the same input
    assert timed[1::2] == per_layer and len(per_layer) == 5
    assert per_layer == ([False] + [True] * 4 if training else [False] * 5)
