"""TrainState: the per-run state a checkpoint holds. Its round trip through a weights-only
checkpoint gives the same random streams and the same records, and a checkpoint written in
the layout of the version before TrainState (torch's generator only) still resumes
exactly."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from audiocpc import load_config
from audiocpc.training.checkpoint import load_checkpoint, save_checkpoint
from audiocpc.training.state import EpochMeter, TrainState, rank_seed
from audiocpc.training.trainer import Trainer, train


def _through_a_file(payload: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint gives back: saved and read with the weights-only loader."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _draws() -> list[float]:
    """A few numbers from every generator a training step might use."""
    return [random.random(), random.gauss(0, 1), float(np.random.rand()),
            float(np.random.standard_normal()), float(torch.rand(1)), float(torch.randn(1))]


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _a_state_mid_epoch() -> TrainState:
    state = TrainState(steps_per_epoch=5, step=7, step_losses=[2.0, 1.9, 1.8, 1.7, 1.6, 1.5, 1.4],
                       last_finite_loss=1.4, settings_changes=[{"step": 3, "changes": {"train.lr": [0.1, 0.2]}}])
    state.history.append({"epoch": 1, "loss": 1.8})
    state.meter.add(1.5, [0.5, 0.25])
    state.meter.add(1.4, [0.6, 0.35])
    return state


def test_round_trip_gives_the_same_random_streams_and_records() -> None:
    _seed_all(1)
    random.gauss(0, 1)  # leaves a cached Gaussian in both: part of the state
    np.random.standard_normal()
    saved = _through_a_file(_a_state_mid_epoch().state_dict())
    continued = _draws()
    _seed_all(99)  # the streams move elsewhere

    restored = TrainState(steps_per_epoch=5)
    restored.load_state_dict(saved)
    assert _draws() == continued
    assert restored == _a_state_mid_epoch()
    assert restored.epoch == 1 and saved["epoch"] == 1
    assert restored.meter == EpochMeter(loss_sum=2.9, accuracy_sums=[1.1, 0.6], steps=2)


def test_resumed_state_continues_as_the_state_that_never_stopped() -> None:
    def run(state: TrainState, steps: int) -> None:  # a stand-in loop: draws, records, counts
        for _ in range(steps):
            loss = float(torch.rand(1)) + random.random() + float(np.random.rand())
            state.step += 1
            state.step_losses.append(loss)
            state.meter.add(loss, [0.5])
            state.last_finite_loss = loss

    _seed_all(0)
    straight = TrainState(steps_per_epoch=10)
    run(straight, 3)
    checkpoint = _through_a_file(straight.state_dict())
    run(straight, 4)

    _seed_all(5)
    resumed = TrainState(steps_per_epoch=10)
    resumed.load_state_dict(checkpoint)
    run(resumed, 4)
    assert resumed == straight


def test_a_rank_without_a_saved_state_is_seeded_from_its_rank_and_the_step() -> None:
    torch.manual_seed(0)
    payload = _through_a_file(TrainState(steps_per_epoch=4, step=6).state_dict(
        rank_rng=[{"torch": torch.get_rng_state()}]))  # the run had one process
    TrainState(steps_per_epoch=4).load_state_dict(payload, rank=1, seed=11)
    drawn = torch.rand(3)
    torch.manual_seed(rank_seed(11, rank=1, step=6))
    assert torch.equal(drawn, torch.rand(3))


def test_a_state_of_the_old_layout_sets_the_torch_generator_and_leaves_the_others() -> None:
    torch.manual_seed(4)
    old = {"step": 2, "history": [], "step_losses": [1.0, 0.9], "meter": {},
           "last_finite_loss": 0.9, "rng": {"torch": torch.get_rng_state()}}
    expected_torch = torch.rand(2)
    random.seed(8)
    expected_python = random.random()
    random.seed(8)
    state = TrainState(steps_per_epoch=4)
    state.load_state_dict(old)
    assert torch.equal(torch.rand(2), expected_torch)
    assert random.random() == expected_python  # not touched by a state that does not hold it
    assert state.meter == EpochMeter() and state.settings_changes == []


# The checkpoint layout written before TrainState: its top-level keys, and an "rng" entry
# holding torch's generator only ("cuda" too on a machine with CUDA).
OLD_LAYOUT_KEYS = {"format", "config", "model", "optimizer", "scaler", "step", "epoch", "history",
                   "step_losses", "meter", "last_finite_loss", "rng", "finished", "world_size",
                   "settings_changes"}


def test_a_checkpoint_in_the_old_layout_resumes_exactly(tone_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    common = ["train.steps_per_epoch=3", "train.checkpoint_every=2", "train.epochs=2", "data.N=4",
              "model.encoder.dropout=0.1", "train.validation_fraction=0"]
    straight = train(load_config("1dconv_tiny", [f"output.dir={tmp_path / 'a'}", *common]),
                     tone_dir, progress=False)

    config = load_config("1dconv_tiny", [f"output.dir={tmp_path / 'b'}", *common])
    step = Trainer.train_step
    calls = []

    def stop_in_step_five(self: Trainer, *args: Any) -> Any:  # the checkpoint of step 4 remains
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return step(self, *args)

    monkeypatch.setattr(Trainer, "train_step", stop_in_step_five)
    with pytest.raises(KeyboardInterrupt):
        train(config, tone_dir, progress=False)
    monkeypatch.undo()

    run_dir = tmp_path / "b" / "cpc" / config.run_name
    payload = load_checkpoint(run_dir)
    assert set(payload) == OLD_LAYOUT_KEYS and payload["step"] == 4
    assert payload["meter"]["steps"] == 1  # stopped inside the second epoch
    payload["rng"] = {key: payload["rng"][key] for key in ("torch", "cuda") if key in payload["rng"]}
    save_checkpoint(run_dir / "checkpoint.pt", payload)

    resumed = train(config, tone_dir, resume=True, progress=False)
    assert resumed.steps == 6
    assert resumed.step_losses == straight.step_losses
    assert resumed.history == [{**h, "seconds": r["seconds"]} for h, r in zip(straight.history, resumed.history)]
    a, b = load_checkpoint(straight.run_dir)["model"], load_checkpoint(resumed.run_dir)["model"]
    for name in a:
        assert torch.equal(a[name], b[name]), name
