"""Crashes and untrusted files: kill -9 during a checkpoint save, Ctrl-C, finished runs,
crafted pickles and YAML tags, and label-table paths that try to leave the data folder."""

from __future__ import annotations

import csv
import hashlib
import os
import pickle
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from audiocpc.training.checkpoint import CHECKPOINT_NAME, SAVE_DELAY_ENV, load_checkpoint
from audiocpc.cli import main
from audiocpc import load_config
from audiocpc.errors import CheckpointError, ConfigError, RunExistsError
from audiocpc.training.trainer import train

SHORT_RUN = ["train.epochs=2", "train.steps_per_epoch=4", "train.checkpoint_every=2",
             "data.N=4"]


def _cli_args(data: Path, out: Path, name: str, *extra: str) -> list[str]:
    args = ["train", "--preset", "1dconv_tiny", "--data", str(data), "--out", str(out),
            "--name", name, "--quiet"]
    for item in SHORT_RUN:
        args += ["--set", item]
    return args + list(extra)


def _start(args: list[str], stall_seconds: float | None) -> subprocess.Popen:
    # the threads of the in-process runs (conftest: torch.set_num_threads(2)), for MKL too:
    # an inherited MKL_NUM_THREADS=1 sums in another order and the losses differ in the last bit
    env = dict(os.environ, OMP_NUM_THREADS="2", MKL_NUM_THREADS="2", PYTHONUNBUFFERED="1")
    env.pop(SAVE_DELAY_ENV, None)
    if stall_seconds is not None:
        env[SAVE_DELAY_ENV] = str(stall_seconds)
    return subprocess.Popen([sys.executable, "-m", "audiocpc", *args], env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _wait_for_stall(process: subprocess.Popen, limit_s: float = 120) -> list[str]:
    """Read stderr until the save hook says it is stalling (a checkpoint is half-saved)."""
    watchdog = threading.Timer(limit_s, process.kill)
    watchdog.start()
    lines: list[str] = []
    try:
        for line in process.stderr:
            lines.append(line)
            if "test hook: stalling the save" in line:
                return lines
    finally:
        watchdog.cancel()
    raise AssertionError("the run ended without reaching a stalled save:\n" + "".join(lines))


def _reference(tone_dir: Path, tmp_path: Path) -> tuple[list[float], list[float]]:
    config = load_config("1dconv_tiny", [f"output.dir={tmp_path / 'reference'}",
                                         "output.name=ref", *SHORT_RUN])
    result = train(config, tone_dir, progress=False)
    return result.step_losses, [h["loss"] for h in result.history]


def _history_losses(run_dir: Path) -> list[float]:
    with open(run_dir / "history.csv", newline="") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


@pytest.mark.slow  # real processes or a learning run: seconds, not milliseconds
def test_kill_9_and_ctrl_c_while_saving_then_resume_is_exact(tone_dir: Path,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "results"
    run_dir = out / "cpc" / "crash"

    # 1. kill -9 while the step-4 checkpoint is being saved
    process = _start(_cli_args(tone_dir, out, "crash"), stall_seconds=120)
    _wait_for_stall(process)  # the save has written its temporary file, not yet renamed it
    temporaries = list(run_dir.glob(f".{CHECKPOINT_NAME}.*.tmp"))
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert len(temporaries) == 1  # the new checkpoint, complete but never renamed
    survivor = load_checkpoint(run_dir)  # the previous good checkpoint is intact
    assert survivor["step"] == 2 and len(survivor["step_losses"]) == 2
    assert not survivor["finished"]

    # without --resume the unfinished run is protected, and described
    assert main(_cli_args(tone_dir, out, "crash")) == 2
    with pytest.raises(RunExistsError, match=r"an unfinished run \(stopped at step 2\)"):
        train(load_config("1dconv_tiny", [f"output.dir={out}", "output.name=crash", *SHORT_RUN]),
              tone_dir, progress=False)

    # 2. --resume, then Ctrl-C while the step-4 checkpoint is being saved again
    process = _start(_cli_args(tone_dir, out, "crash", "--resume"), stall_seconds=2)
    _wait_for_stall(process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "stopped at step 4" in stderr
    interrupted = load_checkpoint(run_dir)
    assert interrupted["step"] == 4 and not interrupted["finished"]
    assert interrupted["step_losses"][:2] == survivor["step_losses"]
    assert not list(run_dir.glob(f".{CHECKPOINT_NAME}.*.tmp"))  # the orphan was cleaned up

    # 3. resume to the end: the same loss at every step as a run that never stopped
    config = load_config("1dconv_tiny", [f"output.dir={out}", "output.name=crash", *SHORT_RUN])
    finished = train(config, tone_dir, resume=True, progress=False)
    reference_steps, reference_epochs = _reference(tone_dir, tmp_path)
    final = load_checkpoint(run_dir)
    assert final["step"] == 8 and final["finished"]
    assert final["step_losses"] == finished.step_losses == reference_steps
    assert _history_losses(run_dir) == pytest.approx(reference_epochs, rel=1e-6)


def _folder_state(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(folder)): (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_finished_run_is_never_overwritten_without_force(tone_dir: Path, tmp_path: Path) -> None:
    overrides = [f"output.dir={tmp_path}", "output.name=done", "train.epochs=2",
                 "train.steps_per_epoch=3", "train.checkpoint_every=3", "data.N=4"]
    config = load_config("1dconv_tiny", overrides)
    first = train(config, tone_dir, progress=False)
    run_dir = first.run_dir
    before = _folder_state(run_dir)

    with pytest.raises(RunExistsError, match=r"a finished run \(6 steps\).*--resume.*--force"):
        train(config, tone_dir, progress=False)
    again = train(config, tone_dir, resume=True, progress=False)  # nothing left to do
    assert again.steps == 6 and again.step_losses == first.step_losses
    assert _folder_state(run_dir) == before  # not one byte or timestamp changed

    (run_dir / "tensorboard").mkdir(exist_ok=True)
    (run_dir / "tensorboard" / "events.old").write_text("old run")
    (run_dir / "notes.txt").write_text("mine")
    changed = load_config("1dconv_tiny", overrides[:-1] + ["data.N=6"])
    fresh = train(changed, tone_dir, force=True, progress=False)
    assert fresh.steps == 6 and fresh.step_losses != first.step_losses
    assert not (run_dir / "tensorboard" / "events.old").exists()  # old outputs are gone
    assert (run_dir / "notes.txt").read_text() == "mine"  # the user's own files are not
    assert load_checkpoint(run_dir)["config"]["data"]["N"] == 6


class _RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the plain-pickle variant
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_crafted_pickle_checkpoint_is_refused(writer: str, tone_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    run_dir = tmp_path / "cpc" / "evil"
    run_dir.mkdir(parents=True)
    payload = {"model": _RunsCode(marker), "config": {}, "step": 1}
    with open(run_dir / CHECKPOINT_NAME, "wb") as handle:
        if writer == "torch.save":
            torch.save(payload, handle)
        else:
            pickle.dump(payload, handle)
    with pytest.raises(CheckpointError, match="refused to load") as err:
        load_checkpoint(run_dir)
    assert "could run code" in str(err.value) and "\n" not in str(err.value)
    # the same through training with --resume
    config = load_config("1dconv_tiny", [f"output.dir={tmp_path}", "output.name=evil"])
    with pytest.raises(CheckpointError, match="refused to load"):
        train(config, tone_dir, resume=True, progress=False)
    assert not marker.exists()  # the command never ran


def test_yaml_python_tags_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    preset = tmp_path / "evil.yaml"
    preset.write_text(f"train:\n  lr: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(preset))
    with pytest.raises(ConfigError):
        load_config("1dconv_tiny", [f"train.lr=!!python/object/apply:os.system ['touch {marker}']"])
    assert not marker.exists()


@pytest.mark.parametrize("name", ["../outside.wav", "/etc/passwd", "a/../../b.wav",
                                  "..\\windows.wav", "C:\\audio\\x.wav"])
def test_label_table_paths_cannot_leave_the_data_folder(name: str, tmp_path: Path) -> None:
    from audiocpc.data.labels import read_label_table  # a broken module must fail, not skip

    table = tmp_path / "labels.csv"
    table.write_text(f"file,label\nok/x.wav,a\n{name},b\n")
    with pytest.raises(ConfigError, match="labels.csv:3"):
        read_label_table(table)


def test_checkpoints_hold_only_plain_data(tone_dir: Path, tmp_path: Path) -> None:
    """A checkpoint holds tensors and plain data only, so the safe loader reads it all."""
    config = load_config("1dconv_tiny", [f"output.dir={tmp_path}", "output.name=plain",
                                         "train.epochs=1", "train.steps_per_epoch=2", "data.N=4"])
    result = train(config, tone_dir, progress=False)
    payload = torch.load(result.run_dir / CHECKPOINT_NAME, weights_only=True)
    assert payload["step"] == 2 and np.isfinite(payload["step_losses"]).all()
