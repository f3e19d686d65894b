"""A run tells a healthy run from a dead one: quiet recordings learn (each recording is
standardised), a loss stuck at chance is reported (or stops the run), the validation loss of
held-out files is recorded, the learning rate follows its schedule, and accumulated batches
give the gradient of the whole batch."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiocpc import load_config
from audiocpc.cli import main
from audiocpc.training.schedule import learning_rate
from audiocpc.training.trainer import Trainer, train
from audiocpc.training.validation import validation_files

SHORT = ["train.epochs=4", "train.steps_per_epoch=25", "train.checkpoint_every=25"]


@pytest.fixture(scope="module")
def quiet_dir(tone_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tone files 50 dB lower (peaks near 0.0016): a quiet recording."""
    folder = tmp_path_factory.mktemp("quiet")
    for path in sorted(tone_dir.glob("*.wav")):
        wave, rate = sf.read(path, dtype="float32")
        sf.write(folder / path.name, wave * 10 ** (-50 / 20), rate, subtype="FLOAT")
    return folder


@pytest.mark.slow  # real processes or a learning run: seconds, not milliseconds
def test_a_quiet_recording_learns(quiet_dir: Path, tmp_path: Path) -> None:
    # the reference's encoder (no normalisation): only the input standardisation helps here
    config = load_config("1dconv_tiny", [f"output.dir={tmp_path}", "model.encoder.norm=none",
                                         *SHORT])
    assert config.data.standardize
    result = train(config, quiet_dir, progress=False)
    chance = math.log(config.data.N)
    assert result.history[-1]["loss"] < 0.5 * chance, result.history
    assert result.health is None


@pytest.mark.slow  # real processes or a learning run: seconds, not milliseconds
def test_a_dead_run_is_reported_with_its_likely_causes(tone_dir: Path, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    # a learning rate that cannot move the weights: the loss stays at chance
    config = load_config("1dconv_tiny", [f"output.dir={tmp_path}", "train.lr=1e-12",
                                         "train.dead_run_steps=50", *SHORT])
    result = train(config, tone_dir, progress=False)
    assert result.steps == 100  # warn: the run goes on
    assert result.health is not None and "not learning" in result.health
    assert "train.lr" in result.health and f"ln {config.data.N}" in result.health
    assert any("not learning" in r.message for r in caplog.records)


@pytest.mark.slow  # a training run of many steps: seconds, not milliseconds
def test_a_dead_run_can_stop_with_one_line(tone_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--preset", "1dconv_tiny", "--data", str(tone_dir), "--out", str(tmp_path),
                 "--quiet", "--set", "train.lr=1e-12", "--set", "train.dead_run_steps=25",
                 "--set", "train.on_dead_run=stop", *[a for s in SHORT for a in ("--set", s)]])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("audiocpc: error")]
    assert code == 2 and len(errors) == 1 and "not learning" in errors[0]
    assert "checkpoint (step 25)" in errors[0]


@pytest.mark.slow  # real processes or a learning run: seconds, not milliseconds
def test_the_validation_loss_of_held_out_files_is_recorded(tone_dir: Path, tmp_path: Path) -> None:
    config = load_config("1dconv_tiny", [f"output.dir={tmp_path}", *SHORT])
    held = validation_files(24, config.train.validation_fraction, config.train.seed)
    assert held.size == 2 and np.array_equal(held, validation_files(24, 0.1, config.train.seed))
    result = train(config, tone_dir, progress=False)
    with open(result.run_dir / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and all(row["val_loss"] for row in rows)
    losses = [float(row["val_loss"]) for row in rows]
    assert losses[-1] < losses[0]  # the held-out tones are learnt too
    assert all(f"val_acc_k{j}" in rows[0] for j in range(1, config.data.k + 1))


def test_the_learning_rate_warms_up_then_decays() -> None:
    rates = [learning_rate(s, 1.0, 1000, "cosine", warmup_steps=100, min_ratio=0.1)
             for s in range(1000)]
    assert rates[0] == pytest.approx(0.01) and rates[99] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(rates[:100], rates[1:100]))  # rising warm-up
    assert all(a >= b for a, b in zip(rates[100:], rates[101:]))  # then falling
    assert rates[-1] == pytest.approx(0.1)
    assert learning_rate(999, 1.0, 1000, "linear", 0, 0.0) == pytest.approx(0.0)
    assert learning_rate(500, 2.0, 1000, "constant", 100) == 2.0
    # a short run is not all warm-up: at most a tenth of it
    assert learning_rate(5, 1.0, 20, "constant", warmup_steps=100) == 1.0


@pytest.mark.slow  # a training run of many steps: seconds, not milliseconds
def test_the_optimizer_steps_at_the_scheduled_rate(tone_dir: Path, tmp_path: Path) -> None:
    config = load_config("1dconv_tiny", [f"output.dir={tmp_path}", "train.epochs=2",
                                         "train.steps_per_epoch=10", "train.warmup_steps=5"])
    result = train(config, tone_dir, progress=False)
    expected = learning_rate(19, config.train.lr, 20, "cosine", 5, config.train.min_lr_ratio)
    assert result.history[-1]["lr"] == pytest.approx(expected)


def test_accumulated_batches_give_the_gradient_of_the_whole_batch(tone_dir: Path,
                                                                  tmp_path: Path) -> None:
    # exhaustive negatives (the reference's N-1 other sequences) draw nothing at random
    common = [f"output.dir={tmp_path}", "train.grad_clip=null", "train.warmup_steps=0",
              "train.lr_schedule=constant", "train.optimizer=sgd", "train.lr=0.1",
              "data.N=4", "train.validation_fraction=0"]
    trainer = Trainer(load_config("1dconv_tiny", [*common, "train.accumulate=2",
                                                  "output.name=acc"]), tone_dir, progress=False)
    torch.manual_seed(1)
    crops = torch.randn(8, trainer.config.data.crop_samples)
    reference = Trainer(load_config("1dconv_tiny", [*common, "output.name=ref"]), tone_dir,
                        progress=False)
    reference.model.load_state_dict(trainer.model.state_dict())
    trainer.train_step(crops)
    # by hand: the mean of the two half-batch losses, one optimizer step
    reference.optimizer.zero_grad()
    loss = (reference.model(crops[:4]).loss + reference.model(crops[4:]).loss) / 2
    loss.backward()
    reference.optimizer.step()
    for (name, a), b in zip(trainer.model.state_dict().items(), reference.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
