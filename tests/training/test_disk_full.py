"""A full disk (issue 14, item 6): one message naming the file system and the file, saying
whether a previous checkpoint is intact and what to do; no temporary file left behind, and
the orphans of earlier failures swept on start. The full disk is simulated by making every
write below one folder fail with ENOSPC, as the kernel does."""

from __future__ import annotations

import builtins
import errno
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from audiocpc import load_config
from audiocpc.data.cache import AudioCache
from audiocpc.data.scan import scan_folder
from audiocpc.errors import AudiocpcError
from audiocpc.training.checkpoint import CHECKPOINT_NAME, load_checkpoint
from audiocpc.training.trainer import train

BASE = ["output.name=run", "train.epochs=1", "train.steps_per_epoch=2", "train.checkpoint_every=2",
        "data.N=4"]


class _FullFile:
    """A file whose writes fail as on a full disk."""

    def __init__(self, handle: Any):
        self._handle = handle

    def write(self, data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> "_FullFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.close()


def fill_disk(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """From now on, writing any file below `folder` fails with ENOSPC."""
    real_open = builtins.open

    def full_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(file, mode, *args, **kwargs)
        inside = isinstance(file, (str, os.PathLike)) and str(os.path.abspath(file)).startswith(str(folder))
        return _FullFile(handle) if inside and any(m in mode for m in "wax+") else handle

    monkeypatch.setattr(builtins, "open", full_open)


@pytest.fixture
def out(tmp_path: Path, tone_dir: Path) -> Path:
    out = tmp_path / "results"
    train(load_config("1dconv_tiny", [f"output.dir={out}", *BASE]), tone_dir, progress=False)
    return out


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name]


def test_full_disk_while_saving_a_checkpoint(out: Path, tone_dir: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = out / "cpc" / "run"
    fill_disk(monkeypatch, run_dir)
    config = load_config("1dconv_tiny", [f"output.dir={out}", *BASE, "train.epochs=2",
                                         "train.checkpoint_every=1"])
    with pytest.raises(AudiocpcError) as err:
        train(config, tone_dir, resume=True, progress=False)
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith("no space left on the file system at ")
    assert f"{run_dir}/.{CHECKPOINT_NAME}" in message  # the file being written
    assert "is intact" in message and "--resume" in message
    monkeypatch.undo()
    assert not _temporaries(run_dir)
    assert load_checkpoint(run_dir)["step"] == 2  # the previous checkpoint, whole


def test_full_disk_before_the_first_checkpoint(tmp_path: Path, tone_dir: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "results"
    fill_disk(monkeypatch, out / "cpc" / "run" / f".{CHECKPOINT_NAME}")
    config = load_config("1dconv_tiny", [f"output.dir={out}", *BASE])
    with pytest.raises(AudiocpcError) as err:
        train(config, tone_dir, progress=False)
    message = str(err.value)
    assert "no space left" in message and "intact" not in message  # there is none to speak of
    assert "no checkpoint was written yet" in message


def test_full_disk_while_writing_the_history(out: Path, tone_dir: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = out / "cpc" / "run"
    fill_disk(monkeypatch, run_dir / ".history")
    fill_disk(monkeypatch, run_dir / ".losses")
    config = load_config("1dconv_tiny", [f"output.dir={out}", *BASE, "train.epochs=2"])
    with pytest.raises(AudiocpcError, match=r"no space left.*losses.*checkpoint \(step 2\).*intact"):
        train(config, tone_dir, resume=True, progress=False)


def test_full_cache_gives_one_message_and_no_orphans(tmp_path: Path, tone_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    fill_disk(monkeypatch, cache)
    data = load_config("1dconv_tiny", [f"data.cache_dir={cache}"]).data
    with pytest.raises(AudiocpcError) as err:
        scan_folder(tone_dir, data, progress=False)  # decodes every file into the cache
    message = str(err.value)
    assert message.startswith("no space left") and str(cache) in message
    assert "data.cache_dir" in message and "\n" not in message
    monkeypatch.undo()
    assert not _temporaries(cache)


def test_full_disk_while_writing_the_data_report(tmp_path: Path, tone_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    data = load_config("1dconv_tiny").data
    report = scan_folder(tone_dir, data, progress=False)
    target = tmp_path / "reports"
    target.mkdir()
    fill_disk(monkeypatch, target)
    monkeypatch.setattr(io, "open", builtins.open)  # pathlib writes through io.open
    with pytest.raises(AudiocpcError, match="no space left.*report.json"):
        report.write(target / "report.json")
    monkeypatch.undo()
    assert not list(target.iterdir())


def test_orphaned_temporaries_are_swept_on_start(tmp_path: Path) -> None:
    """fileio's temporary names; an old one is an orphan whatever its PID (a cache folder may
    be shared with other machines, whose PIDs say nothing here), a fresh one is being written."""
    cache = tmp_path / "cache"
    shard = cache / "ab"
    shard.mkdir(parents=True)
    dead_pid = 2**22 + 12345  # above Linux's pid_max default: no such process
    dead = shard / f".ab{'0' * 38}.npy.{dead_pid}.0a1b2c3d.tmp"
    old = shard / f".ab{'1' * 38}.npy.{os.getpid()}.0a1b2c3e.tmp"
    live = shard / f".ab{'2' * 38}.npy.{os.getpid()}.0a1b2c3f.tmp"
    entry = shard / f"ab{'3' * 38}.npy"
    for path in (dead, old, live):
        path.write_bytes(b"half an array")
    np.save(entry, np.zeros(4, dtype=np.float32))
    two_hours_ago = time.time() - 7200
    for path in (dead, old):
        os.utime(path, (two_hours_ago, two_hours_ago))
    AudioCache(cache)
    assert not dead.exists() and not old.exists()
    assert live.exists() and entry.exists()  # a writer still at work; a finished entry


def test_checkpoint_temporaries_of_dead_processes_are_swept(out: Path, tone_dir: Path) -> None:
    run_dir = out / "cpc" / "run"
    orphan = run_dir / f".{CHECKPOINT_NAME}.{2**22 + 12345}.tmp"
    shutil.copy(run_dir / CHECKPOINT_NAME, orphan)
    train(load_config("1dconv_tiny", [f"output.dir={out}", *BASE, "train.epochs=2"]), tone_dir,
          resume=True, progress=False)
    assert not orphan.exists()


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 2 MB file system (tmpfs), where only root may mount one: skipped elsewhere."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_really_full_disk_through_the_cli(small_disk: Path, tone_dir: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A 1dconv_tiny checkpoint is 1.2 MB: the first fits on the 2 MB disk, the second not."""
    from audiocpc.cli import main

    args = ["train", "--preset", "1dconv_tiny", "--data", str(tone_dir), "--out", str(small_disk),
            "--name", "run", "--quiet"]
    for item in ["train.epochs=1", "train.steps_per_epoch=4", "train.checkpoint_every=2", "data.N=4"]:
        args += ["--set", item]
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    error = [line for line in lines if line.startswith("audiocpc: error")]
    assert len(error) == 1, lines
    assert f"no space left on the file system at {small_disk}" in error[0]
    assert "checkpoint.pt is intact" in error[0] and "--resume" in error[0]
    run_dir = small_disk / "cpc" / "run"
    assert not _temporaries(run_dir)
    assert load_checkpoint(run_dir)["step"] == 2  # whole, and its hash matches
