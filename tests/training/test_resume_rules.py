"""One rule for --resume (issue 14, item 2): settings that change the course of the run are
refused, naming each changed key and the fix; the safe ones are applied, announced in one
line and recorded (config.yaml and the checkpoint). A changed learning rate reaches the
optimizer."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Iterator

import pytest
import torch
import yaml

from audiocpc.cli import main
from audiocpc import load_config
from audiocpc.errors import ConfigError
from audiocpc.training.checkpoint import load_checkpoint
from audiocpc.training.resume_rules import SAFE_ON_RESUME, compare_for_resume
from audiocpc.training.trainer import Trainer, train

# a constant rate: the learning rate recorded per epoch is train.lr itself
BASE = ["output.name=run", "train.epochs=1", "train.steps_per_epoch=2", "train.checkpoint_every=2",
        "data.N=4", "train.lr_schedule=constant"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, tone_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("resume-base")
    with pytest.MonkeyPatch.context() as patch:  # module scope: the autouse cache fixture is not active
        patch.setenv("AUDIOCPC_CACHE", str(tmp_path_factory.getbasetemp() / "audio-cache"))
        train(load_config("1dconv_tiny", [f"output.dir={out}", *BASE]), tone_dir, progress=False)
    return out


@pytest.fixture
def out(finished_run: Path, tmp_path: Path) -> Path:
    """A private copy of the finished one-epoch run."""
    copy = tmp_path / "results"
    shutil.copytree(finished_run, copy)
    return copy


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    handler = _Lines()
    logger = logging.getLogger("audiocpc")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def _config(out: Path, *changes: str):
    return load_config("1dconv_tiny", [f"output.dir={out}", *BASE, *changes])


@pytest.mark.parametrize("change, key", [
    ("train.seed=1", "train.seed"),
    ("data.full_duration=2.0", "data.full_duration"),
    ("data.N=6", "data.N"),
    ("train.optimizer=sgd", "train.optimizer"),
    ("loss.step_weights=linear_decay", "loss.step_weights"),
    ("model.encoder.dropout=0.2", "model.encoder.dropout"),
    ("augment.gain_db=3", "augment.gain_db"),
    ("train.lr_schedule=cosine", "train.lr_schedule"),
    ("train.warmup_steps=1", "train.warmup_steps"),
    ("train.min_lr_ratio=0.5", "train.min_lr_ratio"),
    ("train.accumulate=2", "train.accumulate"),
    ("train.validation_fraction=0.2", "train.validation_fraction"),
    ("train.validation_crops=8", "train.validation_crops"),
    ("data.standardize=false", "data.standardize"),
])
def test_settings_that_change_the_course_are_refused(change: str, key: str, out: Path,
                                                     tone_dir: Path) -> None:
    before = (out / "cpc" / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(ConfigError) as err:
        train(_config(out, "train.epochs=2", change), tone_dir, resume=True, progress=False)
    message = str(err.value)
    assert "\n" not in message and key in message and "--force" in message
    assert (out / "cpc" / "run" / "checkpoint.pt").read_bytes() == before  # nothing was touched


def test_every_refused_key_is_named_with_its_old_value(out: Path, tone_dir: Path) -> None:
    with pytest.raises(ConfigError) as err:
        train(_config(out, "train.seed=7", "data.full_duration=2.0", "train.epochs=2"),
              tone_dir, resume=True, progress=False)
    message = str(err.value)
    assert "train.seed 0 -> 7" in message and "data.full_duration 1.0 -> 2.0" in message
    assert "--set train.seed=0" in message and "--set data.full_duration=1.0" in message  # pasteable
    assert "train.epochs" not in message  # a safe change is not part of the refusal


def test_cli_refusal_is_one_line_with_exit_2(out: Path, tone_dir: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "--preset", "1dconv_tiny", "--data", str(tone_dir), "--out", str(out),
            "--quiet", "--resume", "--set", "train.seed=3"] + [a for b in BASE for a in ("--set", b)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.seed" in err[0] and "--force" in err[0]


def test_a_changed_learning_rate_reaches_the_optimizer(out: Path, tone_dir: Path,
                                                       log_lines: list[str]) -> None:
    config = _config(out, "train.epochs=2", "train.lr=0.0005")
    trainer = Trainer(config, tone_dir, resume=True, progress=False)
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [0.0005]
    announced = [line for line in log_lines if "train.lr" in line]
    assert len(announced) == 1 and "0.002 -> 0.0005" in announced[0]
    assert "train.epochs 1 -> 2" in announced[0]  # every change in the same one line
    result = trainer.fit()
    assert result.history[-1]["lr"] == 0.0005  # what history.csv records for the new epoch
    run_dir = out / "cpc" / "run"
    assert load_checkpoint(run_dir)["config"]["train"]["lr"] == 0.0005
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["lr"] == 0.0005
    saved = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert saved["optimizer"]["param_groups"][0]["lr"] == 0.0005
    assert saved["settings_changes"][-1]["step"] == 2
    assert saved["settings_changes"][-1]["changes"]["train.lr"] == [0.002, 0.0005]


def test_safe_settings_are_applied_and_announced(out: Path, tone_dir: Path,
                                                 log_lines: list[str]) -> None:
    config = _config(out, "train.epochs=2", "train.checkpoint_every=1", "train.threads=1",
                     "data.num_workers=0", "train.max_minutes=30")
    result = train(config, tone_dir, resume=True, progress=False)
    assert result.steps == 4
    announced = [line for line in log_lines if "changed settings" in line]
    assert len(announced) == 1
    for key in ("train.epochs", "train.checkpoint_every", "train.threads", "train.max_minutes"):
        assert key in announced[0]


def test_no_change_no_announcement(out: Path, tone_dir: Path, log_lines: list[str]) -> None:
    train(_config(out, "train.epochs=2"), tone_dir, resume=True, progress=False)
    train(_config(out, "train.epochs=2"), tone_dir, resume=True, progress=False)
    assert sum("changed settings" in line for line in log_lines) == 1  # only the first resume


def test_the_rule_as_a_function() -> None:
    old = load_config("1dconv_tiny").to_dict()
    new = load_config("1dconv_tiny", ["train.epochs=50", "train.seed=4", "output.name=x",
                                      "data.N=8"]).to_dict()
    verdict = compare_for_resume(old, new)
    assert {c.key for c in verdict.applied} == {"train.epochs", "output.name"}
    assert {c.key for c in verdict.refused} == {"train.seed", "data.N"}
    # the global batch is what must stay: 2 processes x N=8 resumed by 1 process x N=16
    two = load_config("1dconv_tiny", ["data.N=8"]).to_dict()
    one = load_config("1dconv_tiny", ["data.N=16"]).to_dict()
    assert not compare_for_resume(two, one, saved_world_size=2, world_size=1).refused
    # negatives from the global batch: one process always draws them there
    local = load_config("1dconv_tiny").to_dict()
    shared = load_config("1dconv_tiny", ["loss.negatives.across_ranks=true"]).to_dict()
    assert not compare_for_resume(local, shared, saved_world_size=1, world_size=2).refused
    assert compare_for_resume(local, shared, saved_world_size=2, world_size=2).refused
    assert "train.lr" in SAFE_ON_RESUME and "train.seed" not in SAFE_ON_RESUME


def test_dead_run_settings_are_safe() -> None:
    old = load_config("1dconv_tiny").to_dict()
    new = load_config("1dconv_tiny", ["train.dead_run_steps=0", "train.on_dead_run=stop"]).to_dict()
    verdict = compare_for_resume(old, new)
    assert {c.key for c in verdict.applied} == {"train.dead_run_steps", "train.on_dead_run"}
    assert not verdict.refused


def test_a_checkpoint_older_than_the_new_settings_is_compared_as_it_was_trained() -> None:
    """A stored configuration without the keys added since gets the values that reproduce
    how it was trained (presets.load.upgrade_stored), not today's defaults."""
    from audiocpc.training.resume_rules import comparable_config

    stored = load_config("1dconv_tiny", ["train.lr_schedule=constant", "train.warmup_steps=0",
                                         "train.validation_fraction=0",
                                         "data.standardize=false"]).to_dict()
    for section, key in [("train", "lr_schedule"), ("train", "warmup_steps"),
                         ("train", "validation_fraction"), ("data", "standardize")]:
        del stored[section][key]
    upgraded = comparable_config(stored, "checkpoint.pt")
    same = load_config("1dconv_tiny", ["train.lr_schedule=constant", "train.warmup_steps=0",
                                       "train.validation_fraction=0", "data.standardize=false",
                                       "train.epochs=9"]).to_dict()
    assert not compare_for_resume(upgraded, same).refused
    refused = compare_for_resume(upgraded, load_config("1dconv_tiny").to_dict()).refused
    assert {c.key for c in refused} == {"train.lr_schedule", "train.warmup_steps",
                                        "train.validation_fraction", "data.standardize"}
