"""train.max_minutes: a wall-clock limit that stops at a step boundary with a resumable
checkpoint (the FSDD benchmark trains in such chunks)."""

from __future__ import annotations

from pathlib import Path

from audiocpc.training.checkpoint import load_checkpoint
from audiocpc import load_config
from audiocpc.training.trainer import train


def test_time_limit_stops_with_a_checkpoint_and_resume_finishes(tone_dir: Path, tmp_path: Path) -> None:
    settings = [f"output.dir={tmp_path}", "output.name=budget", "data.N=4", "train.epochs=2",
                "train.steps_per_epoch=5", "train.checkpoint_every=100"]
    limited = train(load_config("cpc_tiny", settings + ["train.max_minutes=1e-6"]), tone_dir,
                    progress=False)
    assert limited.time_limited and not limited.interrupted
    assert limited.steps == 1  # the limit had passed after the first step
    saved = load_checkpoint(limited.run_dir / "checkpoint.pt")
    assert saved["step"] == 1 and not saved["finished"]
    finished = train(load_config("cpc_tiny", settings), tone_dir, resume=True, progress=False)
    assert finished.steps == 10 and not finished.time_limited
    assert len(finished.step_losses) == 10
