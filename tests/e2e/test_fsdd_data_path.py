"""The README's FSDD commands for the data path, on the real recordings (skipped when the
dataset is absent): 3000 files train under `ulimit -n 256`, and the long-context paper
preset trains on them with the clips joined by speaker (data.join=group)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
SPEAKER = "data.join_pattern=_(?P<group>[a-z]+)_"


def _train_with_open_file_limit(data: Path, out: Path, cache: Path, preset: str,
                                *overrides: str, limit: int = 256) -> subprocess.CompletedProcess:
    script = ("import resource, sys\n"
              f"resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))\n"
              "from audiocpc.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    args = ["train", "--preset", preset, "--data", str(data), "--out", str(out), "--quiet",
            "--set", "train.epochs=1", "--set", "train.steps_per_epoch=3"]
    for item in overrides:
        args += ["--set", item]
    env = {**os.environ, "PYTHONPATH": str(SRC), "AUDIOCPC_CACHE": str(cache),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True,
                          text=True, timeout=900)


def test_fsdd_trains_under_an_open_file_limit_of_256(fsdd_dir: Path, tmp_path: Path) -> None:
    done = _train_with_open_file_limit(fsdd_dir, tmp_path / "out", tmp_path / "cache", "cpc_tiny",
                                       "data.full_duration=0.25")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "cpc" / "cpc_tiny" / "data_report.json").read_text())
    assert report["summary"]["files"] == 3000


def test_cpc_paper_on_fsdd_joined_by_speaker_uses_every_clip(fsdd_dir: Path, tmp_path: Path) -> None:
    done = _train_with_open_file_limit(fsdd_dir, tmp_path / "out", tmp_path / "cache", "cpc_paper",
                                       "data.join=group", SPEAKER)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "cpc" / "cpc_paper" / "data_report.json").read_text())["summary"]
    assert summary["usable"] == 3000 and summary["sequences"]["count"] == 6  # six speakers
