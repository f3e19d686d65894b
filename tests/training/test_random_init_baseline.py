"""The untrained baseline (`random_init`) is exactly the seeded initialisation its run's
training started from: the weights of the model at step 0, for the run's own train.seed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from audiocpc import load_config
from audiocpc.training.restore import restore_run
from audiocpc.training.trainer import Trainer

TINY = ["model.z_dim=16", "model.c_dim=16", "model.encoder.filters=8", "data.N=4",
        "train.device=cpu", "train.epochs=1", "train.steps_per_epoch=2",
        "train.validation_fraction=0"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny matrices: one thread is faster


def _train_from(tmp_path: Path, data: Path, seed: int) -> tuple[Path, dict[str, torch.Tensor]]:
    """Train a run for 2 steps; return its folder and its weights at step 0."""
    config = load_config("1dconv_tiny", [f"output.dir={tmp_path}", f"output.name=seed{seed}",
                                         f"train.seed={seed}", *TINY])
    trainer = Trainer(config, data, progress=False)
    at_start = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    return trainer.run_dir, at_start


def test_random_init_baseline_is_the_initialisation_training_started_from(
        tmp_path: Path, tone_dir: Path) -> None:
    run_dir, at_start = _train_from(tmp_path, tone_dir, seed=7)
    baseline = restore_run(run_dir, device="cpu", random_init=True).model.state_dict()
    trained = restore_run(run_dir, device="cpu").model.state_dict()
    assert baseline.keys() == at_start.keys()
    for name, weights in at_start.items():
        assert torch.equal(baseline[name], weights), f"{name} is not the step-0 weight"
    changed = [name for name in at_start if not torch.equal(trained[name], at_start[name])]
    assert changed, "training changed no weight: the comparison above would prove nothing"


def test_random_init_baseline_follows_the_runs_seed(tmp_path: Path, tone_dir: Path) -> None:
    first, _ = _train_from(tmp_path, tone_dir, seed=7)
    second, at_start = _train_from(tmp_path, tone_dir, seed=8)
    a = restore_run(first, device="cpu", random_init=True).model.state_dict()
    b = restore_run(second, device="cpu", random_init=True).model.state_dict()
    assert any(not torch.equal(a[name], b[name]) for name in a)  # another seed, other weights
    assert all(torch.equal(b[name], at_start[name]) for name in b)
