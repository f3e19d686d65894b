"""Two `train` processes on one run folder (issue 14, item 3): the second is refused in one
line naming the first one's PID, and touches nothing; a lock left by a killed process does
not block. Real processes; every wait is for a condition, never a fixed sleep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from audiocpc.errors import RunInUseError
from audiocpc.locks import LOCK_NAME, FolderLock
from audiocpc.training.checkpoint import CHECKPOINT_NAME, SAVE_DELAY_ENV, load_checkpoint

SHORT_RUN = ["train.epochs=2", "train.steps_per_epoch=4", "train.checkpoint_every=2", "data.N=4"]


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    args = [sys.executable, "-m", "audiocpc", "train", "--preset", "1dconv_tiny", "--data",
            str(data), "--out", str(out), "--name", "shared", "--quiet"]
    for item in SHORT_RUN:
        args += ["--set", item]
    return args + list(extra)


def _env(stall: bool) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop(SAVE_DELAY_ENV, None)
    if stall:
        env[SAVE_DELAY_ENV] = "300"
    return env


def _wait_for_stall(process: subprocess.Popen, limit_s: float = 180) -> None:
    watchdog = threading.Timer(limit_s, process.kill)
    watchdog.start()
    lines = []
    try:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "test hook: stalling the save" in line:
                return
    finally:
        watchdog.cancel()
    raise AssertionError("the first run never reached its stalled save:\n" + "".join(lines))


@pytest.mark.slow  # real processes or a learning run: seconds, not milliseconds
def test_second_process_is_refused_and_a_dead_holder_does_not_block(tone_dir: Path,
                                                                    tmp_path: Path) -> None:
    out = tmp_path / "results"
    run_dir = out / "cpc" / "shared"
    first = subprocess.Popen(_args(tone_dir, out), env=_env(stall=True), text=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_stall(first)  # step 2 is saved, the step-4 save is stalled: mid-run
        assert (run_dir / LOCK_NAME).read_text().strip() == str(first.pid)
        before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
        for extra in ([], ["--resume"], ["--force"]):
            second = subprocess.run(_args(tone_dir, out, *extra), env=_env(stall=False), text=True,
                                    capture_output=True, timeout=180)
            assert second.returncode == 2, second.stderr
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1 and f"PID {first.pid}" in lines[0], lines
            assert str(run_dir) in lines[0] and "Traceback" not in second.stderr
        assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before  # untouched
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    # the lock file still names the dead process, but the kernel released its lock
    assert (run_dir / LOCK_NAME).read_text().strip() == str(first.pid)
    third = subprocess.run(_args(tone_dir, out, "--resume"), env=_env(stall=False), text=True,
                           capture_output=True, timeout=300)
    assert third.returncode == 0, third.stderr
    assert load_checkpoint(run_dir / CHECKPOINT_NAME)["step"] == 8
    assert not list(run_dir.glob(f".{CHECKPOINT_NAME}.*.tmp"))


def test_folder_lock_in_one_process(tmp_path: Path) -> None:
    with FolderLock(tmp_path / "run", "training"):
        with pytest.raises(RunInUseError, match=f"PID {os.getpid()}"):
            with FolderLock(tmp_path / "run", "training"):
                pass
    with FolderLock(tmp_path / "run", "training"):  # released on exit
        pass
