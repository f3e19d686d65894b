"""A training run's folder: the one place that names the files a run writes.

    <output.dir>/cpc/<name>/
        config.yaml        the resolved configuration, for people (written atomically at every
                           start; the checkpoint holds its own copy, which is what is trusted)
        checkpoint.pt      everything needed to resume exactly
        checkpoint.pt.sha256  its SHA-256, checked on every load
        .audiocpc.lock     held (flock) by the training process, with its PID
        history.csv        one row per epoch
        losses.npy         mean loss per epoch
        data_report.json   the scan of the training data
        precision.json     with train.mixed_precision=auto: the precision chosen and the speeds
                           measured (the checkpoint's `precision` entry is what a resume uses)
        tensorboard/       event files (with the optional tensorboard extra)

`experiments/layout.py` places run folders under a results folder through `RunFolder.under`,
so the two never disagree about where a run lives.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audiocpc.data.scan import REPORT_NAME
from audiocpc.fileio import atomic_save_npy, atomic_write_text
from audiocpc.locks import LOCK_NAME, FolderLock
from audiocpc.training.checkpoint import CHECKPOINT_NAME, HASH_SUFFIX

RUNS_FOLDER = "cpc"  # results/<RUNS_FOLDER>/<name>


@dataclass(frozen=True)
class RunFolder:
    path: Path

    @classmethod
    def under(cls, results: str | Path, name: str) -> "RunFolder":
        """The run folder of run `name` in the results folder `results`."""
        return cls(Path(results) / RUNS_FOLDER / name)

    @classmethod
    def for_config(cls, config: Any) -> "RunFolder":
        """Where a configuration's run lives: output.dir and the run name."""
        return cls.under(config.output.dir, config.run_name)

    @property
    def name(self) -> str:
        # abspath, not resolve: "." names its folder, and a linked run folder keeps its link's name
        return Path(os.path.abspath(self.path)).name

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_NAME

    @property
    def checkpoint_hash_path(self) -> Path:
        return self.path / (CHECKPOINT_NAME + HASH_SUFFIX)

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_NAME

    def lock(self, purpose: str) -> FolderLock:
        """Held for the whole training: a second process on this folder is refused."""
        return FolderLock(self.path, purpose)

    @property
    def history_path(self) -> Path:
        return self.path / "history.csv"

    @property
    def losses_path(self) -> Path:
        return self.path / "losses.npy"

    @property
    def data_report_path(self) -> Path:
        return self.path / REPORT_NAME

    @property
    def precision_path(self) -> Path:
        return self.path / "precision.json"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tensorboard"

    @property
    def training_curves_path(self) -> Path:
        return self.path / "training_curves.png"

    def outputs(self) -> tuple[Path, ...]:
        """What training writes here; `clear` removes these (and only these)."""
        return (self.checkpoint_path, self.checkpoint_hash_path, self.losses_path, self.history_path, self.data_report_path,
                self.precision_path, self.tensorboard_dir)

    def write_history(self, history: list[dict[str, float]]) -> None:
        """losses.npy (mean loss per epoch) and history.csv (one row per epoch), atomically."""
        atomic_save_npy(self.losses_path, np.array([h["loss"] for h in history], dtype=np.float32))
        keys: list[str] = []  # every column any epoch has (older runs lack the newer ones)
        for record in history:
            keys += [k for k in record if k not in keys]
        table = io.StringIO(newline="")
        writer = csv.DictWriter(table, fieldnames=keys, restval="")
        writer.writeheader()
        writer.writerows(history)
        atomic_write_text(self.history_path, table.getvalue())

    def write_precision(self, record: dict[str, Any]) -> None:
        """precision.json: what train.mixed_precision=auto chose and measured, atomically."""
        atomic_write_text(self.precision_path, json.dumps(record, indent=2) + "\n")

    def holds_run(self) -> bool:
        """Whether a run (finished or not) lives here: its checkpoint is the run."""
        return self.checkpoint_path.exists()

    def clear(self) -> None:
        """For --force: remove the old run's outputs, so nothing of it can be resumed."""
        for target in self.outputs():
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
