"""train.mixed_precision=auto: the faster precision that is safe on this device, chosen by
timing the run's own model before step 1 (here with a fake clock, so the choice is known),
said in one log line, recorded in the run folder and kept on resume; the probe changes
nothing, so an auto run trains exactly like a run given the chosen precision."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch

from audiocpc import load_config
from audiocpc.training import precision as precision_module
from audiocpc.training.checkpoint import load_checkpoint
from audiocpc.training.precision import (
    ProbeResult,
    auto_candidates,
    autocast_context,
    choose_precision,
    combine_ranks,
    measure_precisions,
)
from audiocpc.training.trainer import Trainer, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# a batch-normalised encoder with dropout: the probe's forward passes would move the running
# statistics and the random stream if it did not put them back
TINY = ["model.z_dim=16", "model.c_dim=16", "model.encoder.filters=8", "data.N=4",
        "train.device=cpu", "model.encoder.norm=batch", "model.encoder.dropout=0.1",
        "train.lr_schedule=constant", "train.validation_fraction=0"]
BATCH_SECONDS = 4.0  # data.N = 4 crops of 1 s (1dconv_tiny)


class FakeClock:
    """Each timed step (two clock reads) lasts the next of `durations`, in the order the
    probe takes them: rounds of the candidates in turn (none, bf16, none, bf16, ...)."""

    def __init__(self, durations: list[float]):
        self.durations: Iterator[float] = iter(durations)
        self.now = 100.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        if self.reads % 2 == 0:  # the end of a step
            self.now += next(self.durations)
        return self.now


def _fake_clock(monkeypatch: pytest.MonkeyPatch, float32: float, bf16: float) -> FakeClock:
    clock = FakeClock([float32, bf16] * precision_module.PROBE_TIMED_STEPS)
    monkeypatch.setattr(precision_module, "clock", clock)
    return clock


def _config(out: Path, *overrides: str) -> Any:
    return load_config("1dconv_tiny", [f"output.dir={out}", *TINY, *overrides])


# ---------------------------------------------------------------- the choice


def _results(**seconds: float) -> list[ProbeResult]:
    return [ProbeResult(p, s, True) for p, s in seconds.items()]


def test_the_fastest_precision_is_chosen() -> None:
    assert choose_precision(_results(none=1.0, bf16=0.5)) == "bf16"
    assert choose_precision(_results(none=0.5, bf16=1.0)) == "none"
    assert choose_precision(_results(none=1.0, bf16=0.8, fp16=0.6)) == "fp16"


def test_float32_is_kept_unless_another_precision_is_clearly_faster() -> None:
    # within the 5 % margin the timing is noise, and float32 is the safer numerics
    assert choose_precision(_results(none=1.0, bf16=0.97)) == "none"
    assert choose_precision(_results(none=1.0, bf16=0.94)) == "bf16"


def test_a_non_finite_loss_rules_a_precision_out() -> None:
    results = [ProbeResult("none", 1.0, True), ProbeResult("bf16", 0.1, False),
               ProbeResult("fp16", 0.6, True)]
    assert choose_precision(results) == "fp16"
    assert choose_precision([ProbeResult("none", 1.0, True), ProbeResult("bf16", 0.1, False)]) == "none"
    # nothing finite: float32, whose non-finite loss the training loop then reports
    assert choose_precision([ProbeResult("none", 1.0, False), ProbeResult("bf16", 0.1, False)]) == "none"


def test_ranks_agree_on_the_slowest_time_and_any_non_finite_loss() -> None:
    rank0 = [ProbeResult("none", 1.0, True), ProbeResult("bf16", 0.4, True)]
    rank1 = [ProbeResult("none", 1.2, True), ProbeResult("bf16", 0.5, False)]
    assert combine_ranks([rank0, rank1]) == [ProbeResult("none", 1.2, True),
                                             ProbeResult("bf16", 0.5, False)]


def test_the_candidates_are_those_this_device_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert auto_candidates(cpu) == ["none", "bf16"]  # fp16 is never tried on a CPU
    monkeypatch.setattr(precision_module, "autocast_supports", lambda device, dtype: False)
    assert auto_candidates(cpu) == ["none"]
    monkeypatch.setattr(precision_module, "autocast_supports", lambda device, dtype: True)
    assert auto_candidates(torch.device("cuda")) == ["none", "bf16", "fp16"]


def test_auto_is_not_an_autocast_of_its_own() -> None:
    with pytest.raises(ValueError, match="auto"):
        autocast_context(torch.device("cpu"), "auto")


# ---------------------------------------------------------------- the probe


class _NanInBf16(torch.nn.Module):
    """A loss that is finite in float32 and NaN under bf16 autocast."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(3))

    def forward(self, crops: torch.Tensor, labels: Any = None) -> Any:
        loss = (self.weight * crops.mean()).sum()
        if torch.is_autocast_enabled("cpu"):
            loss = loss * float("nan")
        return type("Out", (), {"loss": loss})()


def test_the_probe_times_each_precision_by_its_fastest_step(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock([1.0, 0.3, 0.8, 0.5])  # none 1.0, bf16 0.3, none 0.8, bf16 0.5
    monkeypatch.setattr(precision_module, "clock", clock)
    results = measure_precisions(_NanInBf16(), torch.ones(2, 5), None, torch.device("cpu"),
                                 ["none", "bf16"], warmup=1, timed=2)
    assert results == [ProbeResult("none", pytest.approx(0.8), True),
                       ProbeResult("bf16", pytest.approx(0.3), False)]
    assert clock.reads == 8  # warm-up steps are not timed
    assert choose_precision(results) == "none"  # bf16 was faster but its loss was NaN


def test_the_probe_puts_back_weights_buffers_gradients_and_every_random_stream(tmp_path: Path,
                                                                              tone_dir: Path) -> None:
    trainer = Trainer(_config(tmp_path, "train.mixed_precision=auto"), tone_dir, progress=False)
    model = trainer.model
    for parameter in model.parameters():
        parameter.grad = torch.full_like(parameter, 0.5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch_rng, numpy_rng, python_rng = torch.get_rng_state(), np.random.get_state(), random.getstate()
    model.eval()
    crops = 0.1 * torch.randn(4, 8000, generator=torch.Generator().manual_seed(1))
    measure_precisions(model, crops, None, torch.device("cpu"), ["none", "bf16"])
    assert not model.training
    assert any("running_mean" in k for k in state)  # the batch norm's statistics are covered
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), torch_rng)
    assert random.getstate() == python_rng
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), numpy_rng))


# ---------------------------------------------------------------- in a run


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir)["model"]


@pytest.mark.parametrize("float32, bf16, chosen", [(1.0, 0.25, "bf16"), (0.25, 1.0, "none")])
def test_an_auto_run_trains_exactly_like_the_precision_it_chose(
        tmp_path: Path, tone_dir: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, float32: float, bf16: float, chosen: str) -> None:
    common = ["train.epochs=1", "train.steps_per_epoch=3"]
    _fake_clock(monkeypatch, float32, bf16)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="audiocpc"):
        auto = train(_config(tmp_path / "auto", "train.mixed_precision=auto", *common), tone_dir,
                     progress=False)
    lines = [r.getMessage() for r in caplog.records if "train.mixed_precision=auto" in r.getMessage()]
    name = {"none": "float32", "bf16": "bf16"}[chosen]
    # one line: the choice and both speeds (4 s of audio per step / the fake step times)
    expected = (f"train.mixed_precision=auto: {name} on cpu (float32 {BATCH_SECONDS / float32:.1f}, "
                f"bf16 {BATCH_SECONDS / bf16:.1f} audio-s/s; fastest of 2 timed step(s) each, "
                "after 1 warm-up)")
    assert lines == [expected]
    fixed = train(_config(tmp_path / "fixed", f"train.mixed_precision={chosen}", *common), tone_dir,
                  progress=False)
    assert auto.step_losses == fixed.step_losses
    a, b = _weights(auto.run_dir), _weights(fixed.run_dir)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    record = json.loads((auto.run_dir / "precision.json").read_text())
    assert record["chosen"] == chosen and record["device"] == "cpu"
    assert record["measured"]["bf16"]["audio_seconds_per_second"] == pytest.approx(BATCH_SECONDS / bf16)
    assert load_checkpoint(auto.run_dir)["precision"] == record
    assert not (fixed.run_dir / "precision.json").exists()  # only auto measures


def _no_clock() -> float:
    raise AssertionError("a resumed auto run measured again")


@pytest.mark.slow  # three short training runs
def test_a_resumed_auto_run_keeps_its_choice_without_measuring(
        tmp_path: Path, tone_dir: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    common = ["train.steps_per_epoch=3", "train.checkpoint_every=3"]
    _fake_clock(monkeypatch, 1.0, 0.25)  # bf16 wins at the start
    first = train(_config(tmp_path / "a", "train.mixed_precision=auto", "train.epochs=1", *common),
                  tone_dir, progress=False)
    assert json.loads((first.run_dir / "precision.json").read_text())["chosen"] == "bf16"
    monkeypatch.setattr(precision_module, "clock", _no_clock)
    caplog.clear()  # the first run's line (captured when an earlier test left INFO on)
    with caplog.at_level(logging.INFO, logger="audiocpc"):
        resumed = train(_config(tmp_path / "a", "train.mixed_precision=auto", "train.epochs=2",
                                *common), tone_dir, resume=True, progress=False)
    lines = [r.getMessage() for r in caplog.records if "train.mixed_precision=auto" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("train.mixed_precision=auto: bf16 on cpu (float32 4.0")
    assert "kept from the run's start" in lines[0]
    straight = train(_config(tmp_path / "b", "train.mixed_precision=bf16", "train.epochs=2", *common),
                     tone_dir, progress=False)
    assert resumed.step_losses == straight.step_losses
    a, b = _weights(resumed.run_dir), _weights(straight.run_dir)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert load_checkpoint(resumed.run_dir)["precision"]["chosen"] == "bf16"
