"""A non-finite loss says what is true about checkpoints (issue 14, item 9): none written
yet, or the step of the last one, which is intact."""

from __future__ import annotations

from pathlib import Path

import pytest

from audiocpc import load_config
from audiocpc.errors import NonFiniteLossError
from audiocpc.training.trainer import train

DIVERGES = ["train.optimizer=sgd", "train.lr=1e12", "train.grad_clip=null", "train.epochs=1",
            "train.steps_per_epoch=30", "data.N=4"]


def test_before_the_first_checkpoint_no_checkpoint_is_claimed(tone_dir: Path, tmp_path: Path) -> None:
    config = load_config("1dconv_tiny", [f"output.dir={tmp_path}", *DIVERGES,
                                         "train.checkpoint_every=1000"])
    with pytest.raises(NonFiniteLossError) as err:
        train(config, tone_dir, progress=False)
    message = str(err.value)
    assert "intact" not in message and "No checkpoint was written yet" in message
    assert not (tmp_path / "cpc" / "1dconv_tiny" / "checkpoint.pt").exists()
    assert "run the command again" in message and "--resume" not in message


def test_after_a_checkpoint_its_step_is_named(tone_dir: Path, tmp_path: Path) -> None:
    config = load_config("1dconv_tiny", [f"output.dir={tmp_path}", *DIVERGES,
                                         "train.checkpoint_every=1"])
    with pytest.raises(NonFiniteLossError) as err:
        train(config, tone_dir, progress=False)
    message = str(err.value)
    step = int(message.split(" at step ")[1].split()[0])
    assert f"The last checkpoint (step {step - 1})" in message and "intact" in message
    assert "--resume" in message
